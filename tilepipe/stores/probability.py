"""Probability stores: the ``(y, x)`` uint8 output of inference, read by the submission, pseudo-labels and eval.

A probability store (``results/predictions/{stage}/{id}.zarr``) is a zarr v3
group and an NGFF 0.5 label image of its slide::

    {id}.zarr/      attrs["ome"]: "multiscales" (axes y, x; type "2x2 mean") and
                    "image-label" (source.image: the slide store, relative to this one,
                    e.g. "../../../slides/{id}.zarr"; colours: value v as magenta at opacity v/255)
                    attrs["tilepipe"]: content "probability", encoding, how it was made
        0           (y, x) uint8 v = round(p * 255) (half to even) at level-0 resolution
        1, 2, ...   the same, each level the 2x2 mean of the one before, with the slide's level shapes
        uncertainty/    a label image of the same slide and layout (source.image one level further up):
                        the ensemble's spread, (y, x) uint8 round(min(2 sigma, 1) * 255), sigma the
                        standard deviation of p over models x flips (0 where nothing was segmented)

All-zero chunks are not stored. Readers use array ``"0"`` only
(:func:`read_probability`); the levels above it are for viewers. A level-k
pixel is the mean of its level-0 pixels (rounded at each level): the right
reduction for a probability, whose mean over an area is the expected
foreground fraction there (a mask's levels take the maximum instead).

A pixel is foreground at threshold ``t`` when ``v >= foreground_cutoff(t)``.

This module does not import torch, so the rules that only read
predictions start fast and do not rerun when model or loader code changes.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.stores.ngff import (
    PyramidWriter,
    create_mask_array,
    label_attrs,
    level_shapes,
    mean_2x2_yx,
    relative_source,
)
from tilepipe.stores.slide import SlideStore

__all__ = [
    "PROBABILITY_SCALE",
    "UNCERTAINTY_GROUP",
    "create_probability",
    "create_uncertainty",
    "foreground_cutoff",
    "read_probability",
    "read_uncertainty",
    "write_mask",
    "write_probability",
]

PROBABILITY_SCALE = 255
PROBABILITY_ARRAY = "0"  # level 0: the levels are named "0", "1", ...
ENCODING = f"uint8 round(p * {PROBABILITY_SCALE}), half to even"
# A viewer shows an image-label through its colours: value v as magenta at opacity v / 255.
UNCERTAINTY_GROUP = "uncertainty"
UNCERTAINTY_ENCODING = f"uint8 round(min(2 sigma, 1) * {PROBABILITY_SCALE}), sigma the std of p over models x flips"
# Spread: value v as orange at opacity v / 255.
UNCERTAINTY_COLORS = tuple({"label-value": v, "rgba": [255, 140, 0, v]} for v in range(1, PROBABILITY_SCALE + 1))
PROBABILITY_COLORS = tuple({"label-value": v, "rgba": [255, 0, 255, v]} for v in range(1, PROBABILITY_SCALE + 1))


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


def write_mask(probability: zarr.Array, threshold: float, writer: PyramidWriter, band_rows: int) -> int:
    """Write the mask ``probability >= threshold`` (``(y, x)`` uint8 0/1) into ``writer``'s levels.

    ``probability``: a stored ``(y, x)`` probability level 0; swept in bands of
    ``band_rows`` rows (no whole-slide mask). Returns the number of foreground
    pixels; raises RuntimeError if the writer's pyramid is not complete after
    the last band (its level 0 has another height).
    """
    cutoff = foreground_cutoff(threshold)
    foreground = 0
    for y0 in range(0, probability.shape[0], band_rows):
        band = (probability[y0 : y0 + band_rows, :] >= cutoff).astype(np.uint8)
        foreground += int(band.sum(dtype=np.int64))
        writer.write(band)
    if not writer.done:
        raise RuntimeError("the mask's pyramid was not written to its last row")
    return foreground


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


def read_uncertainty(path: str | os.PathLike) -> zarr.Array | None:
    """Return the ensemble's spread of the probability store at ``path``, ``(y, x)`` uint8, or None without one.

    Stores written before the spread was kept (and by
    :func:`write_probability`) have none.
    """
    read_probability(path)  # a probability store, or an InputError
    group = zarr.open_group(path, mode="r")
    if UNCERTAINTY_GROUP not in group:
        return None
    array = group[UNCERTAINTY_GROUP][PROBABILITY_ARRAY]
    if not isinstance(array, zarr.Array) or array.ndim != 2 or array.dtype != np.uint8:
        raise InputError(path, f"{UNCERTAINTY_GROUP}/{PROBABILITY_ARRAY} is not a (y, x) uint8 spread")
    return array


def write_probability(
    out_path: str | os.PathLike,
    probability_yx: np.ndarray,
    chunk: int,
    *,
    slide_store: str | os.PathLike | None = None,
) -> None:
    """Write an in-memory ``(y, x)`` uint8 probability (``round(p * 255)``) as a probability store.

    Same format as :func:`tilepipe.inference.predict.predict_slide` writes, with
    ``chunk`` x ``chunk`` chunks; meant for small arrays
    (tests, demo). With ``slide_store`` (a slide of the same level-0 shape)
    the levels are the slide's and the store names it as its image; without,
    the levels halve until the long side fits one chunk and no image is
    named. Appears atomically.
    """
    probability_yx = np.asarray(probability_yx)
    if probability_yx.ndim != 2 or probability_yx.dtype != np.uint8:
        raise ValueError(f"probability must be (y, x) uint8, got {probability_yx.dtype} {probability_yx.shape}")
    out_path = Path(out_path)
    if slide_store is None:
        shapes, source = level_shapes(*probability_yx.shape, chunk), None
    else:
        shapes, source = SlideStore(slide_store).level_shapes, relative_source(out_path, slide_store)
        if shapes[0] != probability_yx.shape:
            raise ValueError(f"probability shape {probability_yx.shape} differs from the slide's {shapes[0]}")
    with atomic_output(out_path) as tmp, ThreadPoolExecutor(1) as pool:
        writer = create_probability(tmp, out_path.stem, shapes, chunk, {}, source=source, pool=pool)
        writer.write(probability_yx)


def create_probability(
    path: Path,
    name: str,
    shapes: list[tuple[int, int]],
    chunk: int,
    attrs: dict,
    *,
    source: str | None,
    pool: Executor,
) -> PyramidWriter:
    """Create the probability store ``name`` at ``path``; return the writer of its levels.

    Creates the group (NGFF image-label metadata naming the image at the
    relative path ``source``, or none if None; ``attrs`` as attrs["tilepipe"])
    and empty ``(y, x)`` uint8 levels of ``shapes`` (``(height, width)``,
    level 0 first) with ``chunk`` x ``chunk`` chunks. The
    writer (encoding with ``pool``) takes level-0 ``(rows, width)`` bands of
    ``round(p * 255)`` top to bottom and reduces each level into the next by
    the 2x2 mean; all-zero chunks are not stored.
    """
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arrays = [create_mask_array(group, str(level), shape, chunk) for level, shape in enumerate(shapes)]
    group.attrs["ome"] = label_attrs(
        name, len(shapes), source=source, colors=PROBABILITY_COLORS, downsampling="2x2 mean"
    )
    group.attrs["tilepipe"] = {"content": "probability", "encoding": ENCODING, **attrs}
    return PyramidWriter(arrays, mean_2x2_yx, pool=pool, skip_empty=True)


def create_uncertainty(
    path: Path, shapes: list[tuple[int, int]], chunk: int, *, source: str | None, pool: Executor
) -> PyramidWriter:
    """Create the spread label image inside the probability store at ``path``; return the writer of its levels.

    The same layout as :func:`create_probability` (``source`` is the image's
    path relative to the probability store; the group sits one level
    deeper). The writer takes level-0 ``(rows, width)`` bands of
    ``round(min(2 sigma, 1) * 255)`` top to bottom.
    """
    group = zarr.open_group(path / UNCERTAINTY_GROUP, mode="w", zarr_format=3)
    arrays = [create_mask_array(group, str(level), shape, chunk) for level, shape in enumerate(shapes)]
    group.attrs["ome"] = label_attrs(
        UNCERTAINTY_GROUP,
        len(shapes),
        source=None if source is None else f"../{source}",
        colors=UNCERTAINTY_COLORS,
        downsampling="2x2 mean",
    )
    group.attrs["tilepipe"] = {"content": "uncertainty", "encoding": UNCERTAINTY_ENCODING}
    return PyramidWriter(arrays, mean_2x2_yx, pool=pool, skip_empty=True)
