"""Importing the 1st-place team's trained weights (their ``UNET_SERESNEXT101`` state dicts) into tilepipe's network.

Their files (``model_seed0_fold{k}_bestscore.pth``) are plain
``torch.save(model.state_dict())`` of ``UNET_SERESNEXT101`` in
``src/models.py`` of github.com/tikutikutiku/kaggle-hubmap, possibly with
DataParallel's ``module.`` prefix. Their network computes what tilepipe's
network built from FIRST_PLACE_SETTINGS computes; only the names differ,
plus one ordering:

- their hypercolumn concatenates the decoder maps finest first
  (``cat([y0, y1, y2, y3, y4])``, strides 1, 2, 4, 8, 16), tilepipe's
  coarsest first, so the input channels of the first hypercolumn conv are
  taken in reversed blocks of ``decoder_channels``;
- their ``decoder4`` ... ``decoder0`` (coarsest first) are tilepipe's
  ``decoder.blocks.0`` ... ``decoder.blocks.4``; their ``deep4`` ... ``deep1``
  are ``deep_heads.convs.0`` ... ``3``, and their list of deep outputs
  ``[s4, s3, s2, s1]`` is tilepipe's ``"deep"`` list, coarsest first.

Everything else matches as is: skip first in each decoder input
(``cat([skip, y])``), nearest x2 upsampling in the blocks, bilinear
(align_corners) upsampling of the hypercolumn and deep-supervision maps,
deep heads on the upsampled maps, the classification head on the global
average of the stride-32 features, and logits out (no sigmoid in the network).
Their ``clf_threshold`` gate (all-zero logits when no tile of a batch passes it,
at inference) is not part of the network here: inference gates with
``Unet.classify``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from tilepipe.errors import InputError
from tilepipe.model.build import build_model
from tilepipe.model.checkpoint import FORMAT as CHECKPOINT_FORMAT
from tilepipe.model.encoders import ENCODERS
from tilepipe.model.state_dicts import read_torch_file
from tilepipe.model.unet import Unet

# The ``model`` settings that rebuild their UNET_SERESNEXT101 (configs/hubmap_1st_place.yaml without the ImageNet fetch).
FIRST_PLACE_SETTINGS: dict[str, Any] = {
    "encoder": "se_resnext101_32x4d",
    "encoder_weights": None,
    "in_channels": 3,
    "center_channels": 512,
    "decoder_channels": 64,
    "cbam": True,
    "hypercolumns": True,
    "deep_supervision": True,
    "clf_head": True,
}
DATA_PARALLEL_PREFIX = "module."
HYPERCOLUMN_WEIGHT = "segmentation_head.layers.0.weight"  # tilepipe's key of the conv whose input blocks are reversed
_DECODER_LEVELS = 5
_SHOWN_KEYS = 5
_WHAT = "a state dict of the 1st-place UNET_SERESNEXT101 (se_resnext101_32x4d U-Net)"

# (their key prefix, tilepipe's key prefix); inside the decoder blocks, _BLOCK_PARTS rename the layers.
_PREFIXES: list[tuple[str, str]] = [
    *((f"encoder{i}.", f"encoder.stages.{i}.") for i in range(5)),
    ("center.conv.", "decoder.center."),
    *((f"deep{4 - i}.", f"deep_heads.convs.{i}.") for i in range(_DECODER_LEVELS - 1)),
    ("final_conv.", "segmentation_head.layers."),
    ("clf.", "classification_head.layers."),
]
_BLOCKS: list[tuple[str, str]] = [(f"decoder{4 - i}.", f"decoder.blocks.{i}.") for i in range(_DECODER_LEVELS)]
_BLOCK_PARTS: list[tuple[str, str]] = [
    ("bn1.", "bn1."),
    ("conv3x3_1.", "conv1."),
    ("bn2.", "bn2."),
    ("conv3x3_2.", "conv2."),
    ("conv1x1.", "shortcut."),
    ("cbam.channel_attention.fc.", "attention.channel_attention.mlp."),
    ("cbam.spatial_attention.conv3x3.", "attention.spatial_attention.conv."),
]


def _rename(key: str, from_side: int) -> str | None:
    to_side = 1 - from_side
    for pair in _PREFIXES:
        if key.startswith(pair[from_side]):
            return pair[to_side] + key[len(pair[from_side]) :]
    for block in _BLOCKS:
        if key.startswith(block[from_side]):
            rest = key[len(block[from_side]) :]
            for part in _BLOCK_PARTS:
                if rest.startswith(part[from_side]):
                    return block[to_side] + part[to_side] + rest[len(part[from_side]) :]
    return None


def tilepipe_key(key: str) -> str | None:
    """Return tilepipe's state-dict key for their key ``key`` (no ``module.`` prefix), or None if it has no counterpart."""
    return _rename(key, 0)


def first_place_key(key: str) -> str | None:
    """Return their state-dict key for tilepipe's key ``key``, or None if it has no counterpart."""
    return _rename(key, 1)


def reverse_hypercolumn_blocks(weight: torch.Tensor, levels: int = _DECODER_LEVELS) -> torch.Tensor:
    """Return the (out, levels * c, kh, kw) conv ``weight`` with its input channels in reversed blocks of c.

    Their hypercolumn is finest level first, tilepipe's coarsest first; the
    reversal is its own inverse, so it converts either way.
    """
    return torch.cat(weight.chunk(levels, dim=1)[::-1], dim=1)


def _build_on_meta() -> Unet:
    """The network of FIRST_PLACE_SETTINGS with shapes only (meta tensors): no memory, no random init."""
    # import the encoder's library first: tensors it creates at import time must not land on the meta device
    importlib.import_module(ENCODERS[FIRST_PLACE_SETTINGS["encoder"]].library)
    with torch.device("meta"):
        return build_model(FIRST_PLACE_SETTINGS)


def _expected_shapes(model: Unet) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Their keys -> (shape, dtype of tilepipe's tensor), in tilepipe's order."""
    expected = {}
    for key, value in model.state_dict().items():
        theirs = first_place_key(key)
        if theirs is None:
            raise RuntimeError(f"no 1st-place key maps to tilepipe's {key}: the key map in {__name__} is incomplete")
        expected[theirs] = (tuple(value.shape), value.dtype)
    return expected


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _without_data_parallel_prefix(state_dict: dict) -> tuple[dict, str]:
    """Return ``state_dict`` without DataParallel's ``module.`` prefix (if all keys have it) and the prefix removed."""
    keys = list(state_dict)
    if keys and all(isinstance(key, str) and key.startswith(DATA_PARALLEL_PREFIX) for key in keys):
        return {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state_dict.items()}, DATA_PARALLEL_PREFIX
    return state_dict, ""


def _mismatch(state_dict: dict, expected: dict[str, tuple[tuple[int, ...], torch.dtype]], prefix: str) -> str | None:
    """Why ``state_dict`` (their keys) is not their model's state dict, keys named as in the file; None if it is."""
    missing = [prefix + key for key in expected if key not in state_dict]
    unexpected = [f"{prefix}{key}" for key in state_dict if key not in expected]
    wrong_shapes, wrong_types = [], []
    for key, value in state_dict.items():
        if key not in expected:
            continue
        shape, dtype = expected[key]
        if not isinstance(value, torch.Tensor):
            wrong_types.append(f"{prefix}{key} ({type(value).__name__}, not a tensor)")
        elif tuple(value.shape) != shape:
            wrong_shapes.append(f"{prefix}{key} {tuple(value.shape)} (expected {shape})")
        elif value.is_floating_point() != dtype.is_floating_point:
            wrong_types.append(f"{prefix}{key} {value.dtype} (expected {dtype})")
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", wrong_shapes),
            ("wrong types", wrong_types),
        )
        if keys
    ]
    return "; ".join(problems) if problems else None


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return tilepipe's state dict for their complete, checked state dict ``state_dict`` (keys without ``module.``).

    Keys are renamed, the hypercolumn conv's input blocks reversed, tensors
    made contiguous; dtypes are kept.
    """
    converted = {}
    for key, value in state_dict.items():
        ours = tilepipe_key(key)
        if ours is None:
            raise KeyError(f"{key} is not a key of the 1st-place UNET_SERESNEXT101")
        converted[ours] = reverse_hypercolumn_blocks(value) if ours == HYPERCOLUMN_WEIGHT else value.contiguous()
    return converted


def import_first_place(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Unet:
    """Return tilepipe's network (FIRST_PLACE_SETTINGS) holding the 1st-place weights saved at ``path``, in eval mode.

    ``path`` is a ``torch.save``d state dict of their ``UNET_SERESNEXT101``
    (e.g. ``model_seed0_fold0_bestscore.pth``), with or without DataParallel's
    ``module.`` prefix; it is read with ``weights_only=True``. The network's
    outputs ("logits", "deep", "clf") are their ``(logits, logits_deeps,
    logits_clf)`` with ``deepsupervision=True, clfhead=True,
    clf_threshold=None``. Floating tensors become float32, on ``map_location``.
    Raises InputError naming ``path`` (and the offending keys) when the file is
    not such a state dict.
    """
    return first_place_network(read_torch_file(path, map_location), path)


def first_place_network(loaded: object, path: str | os.PathLike) -> Unet:
    """:func:`import_first_place` of an object already read from the file ``path`` (tensors where they are)."""
    if not isinstance(loaded, dict):
        raise InputError(path, f"expected {_WHAT} (a dict of tensors), found {type(loaded).__name__}")
    if loaded.get("format") == CHECKPOINT_FORMAT:
        raise InputError(path, f"this is a tilepipe checkpoint, not {_WHAT}: read it with load_checkpoint")
    state_dict, prefix = _without_data_parallel_prefix(loaded)
    model = _build_on_meta()
    expected = _expected_shapes(model)
    problem = _mismatch(state_dict, expected, prefix)
    if problem is not None:
        raise InputError(path, f"not {_WHAT}: {problem}")
    float32 = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    model.load_state_dict(convert_state_dict(float32), strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors not loaded from {os.fspath(path)}: {_listed(left_on_meta)}")
    return model.eval()
