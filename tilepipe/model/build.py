"""The ``model`` config section -> a network: defaults, validation, assembly."""

from __future__ import annotations

import os
from typing import Any

from tilepipe.config import defaults
from tilepipe.errors import InputError
from tilepipe.model.decoder import UnetDecoder
from tilepipe.model.encoders import build_encoder, check_encoder_name
from tilepipe.model.heads import ClassificationHead, DeepSupervisionHeads, FinestMapHead, HypercolumnHead
from tilepipe.model.unet import Unet

# The schema's ``model`` defaults (the demo's network); the recipe's is in configs/hubmap_1st_place.yaml.
DEFAULT_SETTINGS: dict[str, Any] = defaults("model")
_POSITIVE_INTS = ("in_channels", "center_channels", "decoder_channels")
_FLAGS = ("cbam", "hypercolumns", "deep_supervision", "clf_head")


def _invalid(key: str, problem: str) -> InputError:
    return InputError(None, f"model.{key}: {problem}")


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Return ``settings`` completed with the schema's defaults (DEFAULT_SETTINGS), in their key order, paths as str.

    Raises InputError for an unknown key, an unknown encoder or a value of the wrong type.
    """
    unknown = [key for key in settings if key not in DEFAULT_SETTINGS]
    if unknown:
        raise _invalid(unknown[0], f"unknown setting; known: {', '.join(DEFAULT_SETTINGS)}")
    resolved = {key: settings.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
    check_encoder_name(resolved["encoder"])
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
    return resolved


def build_model(settings: dict[str, Any]) -> Unet:
    """Return the U-Net described by the ``model`` config section ``settings`` (missing keys take the defaults).

    Parameters outside pretrained encoder weights are drawn from torch's global
    RNG: seed it first for a reproducible network. Bad settings, weight files
    and failed downloads raise InputError before or instead of a half-built model.
    """
    resolved = resolve_settings(settings)
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
