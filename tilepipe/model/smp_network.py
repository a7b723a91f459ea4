"""segmentation_models_pytorch architectures behind tilepipe's network interface.

``model.architecture`` names an smp architecture (``tilepipe.config.SMP_ARCHITECTURES``);
smp builds it with one output class, logits out (no activation), and, with
``model.clf_head``, smp's classification head (``aux_params``: average pool,
linear, one logit). Encoders: the named ones through smp's own copies of the
same models (ImageNet weights and weight files as for the 1st-place network:
torchvision's or pretrainedmodels' state dicts, loaded into smp's encoder
without their classifier), or ``timm/NAME`` through smp's ``tu-NAME``
encoders (timm's weights, as in :mod:`tilepipe.model.timm_encoder`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from tilepipe.model.encoders import ENCODERS, original_model
from tilepipe.model.state_dicts import load_state_dict_checked
from tilepipe.model.timm_encoder import check_timm_name, pretrained_arguments, timm_errors, timm_name
from tilepipe.model.unet import EncoderHeads

# smp's classification head as the 1st-place head is used: one logit per tile, no dropout, no activation.
AUX_PARAMS = {"classes": 1, "pooling": "avg", "dropout": None, "activation": None}


class SmpNetwork(EncoderHeads, nn.Module):
    """An smp model's encoder, decoder and heads, with tilepipe's ``encode`` / ``classify`` / ``segment`` split.

    The modules keep smp's attribute names, so the state dict is the smp
    model's own (``smp.create_model(...).load_state_dict`` takes it).
    ``forward(x)`` takes (b, c, h, w), h and w multiples of 32, and returns
    {"logits": (b, 1, h, w)} plus "clf" (b, 1) with a classification head;
    there are no deep-supervision outputs.
    """

    def __init__(self, model: nn.Module, architecture: str):
        super().__init__()
        self.architecture = architecture
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.segmentation_head = model.segmentation_head
        self.classification_head = model.classification_head

    def segment(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return the segmentation logits (b, 1, h, w) at input resolution from ``encode``'s features."""
        return self.segmentation_head(self.decoder(features))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encode(x)
        outputs = {"logits": self.segment(features)}
        if self.classification_head is not None:
            outputs["clf"] = self.classify(features)
        return outputs


def build_smp_network(settings: dict[str, Any]) -> SmpNetwork:
    """Return the smp network of the resolved ``model`` settings (architecture, encoder, weights, heads).

    Raises InputError for an encoder timm does not have (or without maps at
    strides 4..32), bad weight files and failed downloads.
    """
    import segmentation_models_pytorch as smp

    architecture, encoder, weights = settings["architecture"], settings["encoder"], settings["encoder_weights"]
    arguments: dict[str, Any] = {
        "in_channels": settings["in_channels"],
        "classes": 1,
        "activation": None,
        "aux_params": dict(AUX_PARAMS) if settings["clf_head"] else None,
    }
    if settings["decoder_attention"] is not None:
        arguments["decoder_attention_type"] = settings["decoder_attention"]
    name = timm_name(encoder)
    if name is not None:
        check_timm_name(name)
        timm_arguments = pretrained_arguments(name, weights)
        pretrained = timm_arguments.pop("pretrained")
        with timm_errors(name, weights):
            model = smp.create_model(
                architecture,
                encoder_name=f"tu-{name}",
                encoder_weights=True if pretrained else None,
                **arguments,
                **timm_arguments,
            )
        return SmpNetwork(model, architecture)
    in_channels = arguments["in_channels"]
    if weights is not None:
        arguments["in_channels"] = 3  # the weights' first conv; adapted below
    model = smp.create_model(architecture, encoder_name=encoder, encoder_weights=None, **arguments)
    if weights is not None:
        _load_named_encoder(model.encoder, encoder, weights)
        if in_channels != 3:
            model.encoder.set_in_channels(in_channels, pretrained=True)
    return SmpNetwork(model, architecture)


def _load_named_encoder(smp_encoder: nn.Module, name: str, weights: str | os.PathLike) -> None:
    """Load the original model's ``weights`` of the named encoder ``name`` into smp's copy, classifier left out."""
    original = original_model(name, weights).state_dict()
    kept = smp_encoder.state_dict()
    classifier = [key for key in original if key not in kept]
    state_dict = {key: value for key, value in original.items() if key not in classifier}
    load_state_dict_checked(
        smp_encoder, state_dict, weights, f"smp's {name} encoder (the {ENCODERS[name].library} model)"
    )
