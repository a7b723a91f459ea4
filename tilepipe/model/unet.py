"""The U-Net that wires an encoder, the decoder and the heads."""

from __future__ import annotations

import torch
from torch import nn

from tilepipe.model.decoder import UnetDecoder
from tilepipe.model.encoders import Encoder
from tilepipe.model.heads import ClassificationHead, DeepSupervisionHeads, upsample_to_finest

STRIDE = 32  # total downsampling of the encoder: input (h, w) must be multiples of it


class EncoderHeads:
    """What inference and training call on a network besides ``segment``: ``encode``, ``classify``, ``has_classifier``.

    Mixed into :class:`Unet` and :class:`tilepipe.model.smp_network.SmpNetwork`,
    which set ``encoder`` (a module returning the feature maps, finest first,
    deepest last) and ``classification_head`` (or None).
    """

    @property
    def has_classifier(self) -> bool:
        """Whether ``classify`` is available (the model was built with ``clf_head``)."""
        return self.classification_head is not None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the encoder's feature maps of ``x`` (b, c, h, w), finest first, deepest (stride 32) last."""
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"input height and width must be multiples of {STRIDE}, got {h} x {w}")
        return self.encoder(x)

    def classify(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return the classification logits (b, 1) from ``encode``'s features."""
        if self.classification_head is None:
            raise RuntimeError("this model has no classification head (built with model.clf_head: false)")
        return self.classification_head(features[-1])


class Unet(EncoderHeads, nn.Module):
    """Encoder -> decoder -> segmentation head, with optional deep-supervision and classification heads.

    ``forward(x)`` takes (b, c, h, w) float images, h and w multiples of 32,
    and returns a dict of logits: "logits" (b, 1, h, w); "deep" a list of four
    (b, 1, h, w), coarsest decoder level first (if the model has deep heads);
    "clf" (b, 1) tile-level "has foreground" (if it has a classification head).
    ``encode``, ``classify`` and ``segment`` are the same computation split up,
    so that inference can skip the decoder for tiles classified empty.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: UnetDecoder,
        segmentation_head: nn.Module,
        deep_heads: DeepSupervisionHeads | None = None,
        classification_head: ClassificationHead | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = segmentation_head
        self.deep_heads = deep_heads
        self.classification_head = classification_head

    def segment(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return the segmentation logits (b, 1, h, w) at input resolution from ``encode``'s features."""
        logits, _ = self._decode(features, with_deep=False)
        return logits

    def _decode(self, features: list[torch.Tensor], with_deep: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        decoded = self.decoder(features)
        if not (with_deep or self.segmentation_head.uses_all_levels):
            return self.segmentation_head(decoded[-1:]), None
        columns = upsample_to_finest(decoded)
        deep = self.deep_heads(columns[:-1]) if with_deep else None
        return self.segmentation_head(columns), deep

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        features = self.encode(x)
        logits, deep = self._decode(features, with_deep=self.deep_heads is not None)
        outputs: dict[str, torch.Tensor | list[torch.Tensor]] = {"logits": logits}
        if deep is not None:
            outputs["deep"] = deep
        if self.classification_head is not None:
            outputs["clf"] = self.classify(features)
        return outputs
