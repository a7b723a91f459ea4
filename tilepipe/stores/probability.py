"""Probability stores: the ``(y, x)`` uint8 output of inference, read by the submission, pseudo-labels and eval.

A probability store is a zarr v3 group whose array ``"0"`` holds
``v = round(p * 255)`` (half to even) at level-0 resolution; attrs["ome"]
is an NGFF 0.5 single-level multiscale with axes (y, x), attrs["tilepipe"]
says what it is and how it was made. All-zero chunks are not stored.

A pixel is foreground at threshold ``t`` when ``v >= foreground_cutoff(t)``.

This module does not import torch, so the rules that only read
predictions start fast and do not rerun when model or loader code changes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import zarr

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.stores.ngff import LABEL_AXES, NGFF_VERSION, create_mask_array, multiscales

__all__ = [
    "PROBABILITY_SCALE",
    "create_probability_array",
    "foreground_cutoff",
    "read_probability",
    "write_probability",
]

PROBABILITY_SCALE = 255
PROBABILITY_ARRAY = "0"
ENCODING = f"uint8 round(p * {PROBABILITY_SCALE}), half to even"


def foreground_cutoff(threshold: float) -> int:
    """Return the smallest stored value (0..255) that counts as foreground at ``threshold`` (0..1).

    ``floor(threshold * 255 + 0.5)``: 128 for 0.5 (``round(p * 255) >= 128``
    exactly when ``p >= 0.5``), 0 for 0 (every pixel), 255 for 1; for other
    thresholds ``p >= threshold`` up to half a step of 1/255. Raises
    InputError outside [0, 1].
    """
    if not 0 <= threshold <= 1:
        raise InputError(None, f"threshold must be in [0, 1], got {threshold}")
    return math.floor(threshold * PROBABILITY_SCALE + 0.5)


def read_probability(path: str | os.PathLike) -> zarr.Array:
    """Open the probability store at ``path`` read-only; return its ``(y, x)`` uint8 array (``round(p * 255)``)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "probability store does not exist")
    try:
        array = zarr.open_group(path, mode="r")[PROBABILITY_ARRAY]
    except Exception as err:
        raise InputError(path, f"not a probability store: no readable array {PROBABILITY_ARRAY!r} ({err})") from err
    if not isinstance(array, zarr.Array) or array.ndim != 2 or array.dtype != np.uint8:
        raise InputError(path, f"array {PROBABILITY_ARRAY!r} is not a (y, x) uint8 probability")
    return array


def write_probability(out_path: str | os.PathLike, probability_yx: np.ndarray, chunk: int) -> None:
    """Write an in-memory ``(y, x)`` uint8 probability (``round(p * 255)``) as a probability store.

    Same format as :func:`tilepipe.inference.predict.predict_slide` writes, with
    ``chunk`` x ``chunk`` chunks; meant for small arrays (tests, demo).
    Appears atomically.
    """
    probability_yx = np.asarray(probability_yx)
    if probability_yx.ndim != 2 or probability_yx.dtype != np.uint8:
        raise ValueError(f"probability must be (y, x) uint8, got {probability_yx.dtype} {probability_yx.shape}")
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        create_probability_array(tmp, out_path.stem, probability_yx.shape, chunk, {})[...] = probability_yx


def create_probability_array(path: Path, name: str, shape: tuple[int, int], chunk: int, attrs: dict) -> zarr.Array:
    """Create the probability store ``name`` at ``path``: its group (NGFF metadata, ``attrs`` as
    attrs["tilepipe"]) and its empty ``shape`` uint8 array with ``chunk`` x ``chunk`` chunks; return the array."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = create_mask_array(group, PROBABILITY_ARRAY, shape, chunk)
    levels = multiscales(name, LABEL_AXES, 1)
    del levels[0]["type"]  # one level: no downsampling method to name
    group.attrs["ome"] = {"version": NGFF_VERSION, "multiscales": levels}
    group.attrs["tilepipe"] = {"content": "probability", "encoding": ENCODING, **attrs}
    return array
