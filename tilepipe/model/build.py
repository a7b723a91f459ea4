"""The ``model`` config section -> a network: defaults, validation, assembly.

``model.architecture`` chooses the network: ``unet_1st_place`` (:class:`~tilepipe.model.unet.Unet`,
the 1st-place U-Net, on a named encoder or a timm backbone) or an smp
architecture (:class:`~tilepipe.model.smp_network.SmpNetwork`). Both have
``encode``, ``classify``, ``segment``, ``has_classifier`` and a ``forward``
returning {"logits", "deep" (unet_1st_place with deep supervision), "clf"}.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from tilepipe.config import FIRST_PLACE_ARCHITECTURE, FIRST_PLACE_PARTS, check_model_settings, defaults
from tilepipe.errors import InputError
from tilepipe.model.decoder import UnetDecoder
from tilepipe.model.encoders import build_encoder
from tilepipe.model.heads import ClassificationHead, DeepSupervisionHeads, FinestMapHead, HypercolumnHead
from tilepipe.model.unet import Unet

# The schema's ``model`` defaults (the demo's network); the recipe's is in configs/hubmap_1st_place.yaml.
# cbam, hypercolumns and deep_supervision are null there: resolve_settings makes them booleans.
DEFAULT_SETTINGS: dict[str, Any] = defaults("model")
_POSITIVE_INTS = ("in_channels", "center_channels", "decoder_channels")
_FLAGS = ("clf_head",)
_STRINGS = ("architecture", "encoder")


def _invalid(key: str, problem: str) -> InputError:
    return InputError(None, f"model.{key}: {problem}")


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Return ``settings`` completed with the schema's defaults (DEFAULT_SETTINGS), in their key order, paths as str.

    The 1st-place decoder parts (cbam, hypercolumns, deep_supervision) that
    are null become True for unet_1st_place and False for other
    architectures, so the stored settings of today's network are those it
    always had. Raises InputError for an unknown key, architecture or
    encoder, a value of the wrong type, or settings that contradict each
    other (:func:`tilepipe.config.check_model_settings`).
    """
    unknown = [key for key in settings if key not in DEFAULT_SETTINGS]
    if unknown:
        raise _invalid(unknown[0], f"unknown setting; known: {', '.join(DEFAULT_SETTINGS)}")
    resolved = {key: settings.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
    for key in _STRINGS:
        if not isinstance(resolved[key], str):
            raise _invalid(key, f"expected a name, got {resolved[key]!r}")
    weights = resolved["encoder_weights"]
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise _invalid("encoder_weights", f"expected null, 'imagenet' or a file path, got {weights!r}")
        resolved["encoder_weights"] = os.fspath(weights)
    for key in _POSITIVE_INTS:
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(key, f"expected a positive integer, got {value!r}")
    for key in _FLAGS:
        if not isinstance(resolved[key], bool):
            raise _invalid(key, f"expected true or false, got {resolved[key]!r}")
    for key in FIRST_PLACE_PARTS:
        if resolved[key] is not None and not isinstance(resolved[key], bool):
            raise _invalid(key, f"expected true, false or null, got {resolved[key]!r}")
    if resolved["decoder_attention"] is not None and not isinstance(resolved["decoder_attention"], str):
        raise _invalid("decoder_attention", f"expected null or scse, got {resolved['decoder_attention']!r}")
    check_model_settings(resolved)
    first_place = resolved["architecture"] == FIRST_PLACE_ARCHITECTURE
    for key in FIRST_PLACE_PARTS:
        if resolved[key] is None:
            resolved[key] = first_place
    return resolved


def build_model(settings: dict[str, Any]) -> nn.Module:
    """Return the network described by the ``model`` config section ``settings`` (missing keys take the defaults).

    Parameters outside pretrained encoder weights are drawn from torch's global
    RNG: seed it first for a reproducible network. Bad settings, weight files
    and failed downloads raise InputError before or instead of a half-built model.
    """
    resolved = resolve_settings(settings)
    if resolved["architecture"] != FIRST_PLACE_ARCHITECTURE:
        from tilepipe.model.smp_network import build_smp_network  # imports smp (and timm) only when asked for

        return build_smp_network(resolved)
    return build_first_place_unet(resolved)


def build_first_place_unet(resolved: dict[str, Any]) -> Unet:
    """Return the 1st-place U-Net of the resolved ``model`` settings, on a named encoder or a timm backbone."""
    if resolved["encoder"].startswith("timm/"):
        from tilepipe.model.timm_encoder import TimmEncoder, timm_name  # imports timm only when asked for

        encoder = TimmEncoder(timm_name(resolved["encoder"]), resolved["encoder_weights"], resolved["in_channels"])
    else:
        encoder = build_encoder(resolved["encoder"], resolved["encoder_weights"], resolved["in_channels"])
    channels = resolved["decoder_channels"]
    decoder = UnetDecoder(encoder.out_channels, resolved["center_channels"], channels, resolved["cbam"])
    levels = len(decoder.blocks)
    return Unet(
        encoder,
        decoder,
        HypercolumnHead(channels, levels) if resolved["hypercolumns"] else FinestMapHead(channels),
        DeepSupervisionHeads(channels, levels - 1) if resolved["deep_supervision"] else None,
        ClassificationHead(encoder.out_channels[-1]) if resolved["clf_head"] else None,
    )
