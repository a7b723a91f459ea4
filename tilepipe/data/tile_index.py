"""Tile index of a slide store: ``results/tiles/{id}.parquet``.

One row per training tile: ``size`` x ``size`` windows on the base grid
(origins ``0, size, 2 size, ...`` in y and x) and on the grid shifted by
``shift`` in both y and x, zero-filled past the slide's border.

Everything is computed in one sweep over level 0 in bands of chunk rows:
the slide is cut into square blocks of ``gcd(size, shift)`` pixels, every
band adds its pixels' sums (values, squared values, mask pixels) into the
blocks it touches, and each tile then sums its ``(size / block)^2`` blocks
(blocks past the border are zeros, as the tile's zero fill is). Sums are
exact integers, so ``img_std`` equals numpy's ``std`` of the tile. The
tissue ratio is measured the same way on a low pyramid level.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from tilepipe.atomic import atomic_output
from tilepipe.data.tissue import tissue_mask
from tilepipe.errors import InputError
from tilepipe.stores.slide import SlideStore

__all__ = ["COLUMNS", "build_tile_index", "write_tile_index"]

# Column -> dtype of a tile index (a public contract; DESIGN section 3).
COLUMNS = {
    "slide": "str",  # slide id
    "y": "int64",  # tile origin in level-0 pixels (inside the slide; the tile may pass the border)
    "x": "int64",
    "size": "int64",  # tile side, level-0 pixels
    "grid": "int64",  # 0 for the base grid, else the shift of the shifted grid
    "mask_area": "int64",  # glomerulus pixels in the tile (0 on unlabeled slides)
    "mask_ratio": "float64",  # mask_area / size^2
    "tissue_ratio": "float64",  # tissue fraction of the tile (pixels past the border: not tissue)
    "img_std": "float64",  # std of all uint8 values of the zero-filled (c, y, x) tile
    "binned": "int64",  # min(round(mask_ratio * 20), 4), numpy rounding (half to even)
    "is_masked": "bool",  # binned > 0
}

TISSUE_PIXELS_PER_TILE_SIDE = 32
MASK_BINS = 20
MAX_BIN = 4

SQUARES = np.arange(256, dtype=np.uint16) ** 2  # 255^2 fits uint16


def build_tile_index(
    store_path: str | os.PathLike,
    slide_id: str,
    size: int,
    shift: int | None,
    *,
    saturation_threshold: int,
    tissue_level: int | None = None,
    labels_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Return the tile index of one slide store, rows sorted by ``(grid, y, x)``.

    ``size`` is the tile side and ``shift`` (0 or None: base grid only,
    otherwise ``0 < shift < size``) the offset of the second grid, both in
    level-0 pixels. Columns and dtypes are :data:`COLUMNS`.

    ``tissue_ratio`` is measured on pyramid level ``tissue_level``: a pixel
    is tissue when its HSV saturation exceeds ``saturation_threshold``
    (:mod:`tilepipe.data.tissue`); the
    ratio is the tissue area over ``size^2``, so pixels past the border are
    not tissue. The level's downsample ``2^l`` must divide ``size`` and
    ``shift``. By default it is the level whose downsample is nearest (in
    log scale, ties to the finer) to ``size / 32`` pixels, i.e. about 32 x 32
    pixels per tile, among the levels whose downsample divides ``size`` and
    ``shift``.

    ``labels_path``: take the mask from this label store (pseudo-labels, a
    label image at its root) instead of the slide store's own.

    Reads level 0, the labels and the tissue level once each, in bands of
    their chunk rows. Raises InputError for a missing or malformed store and
    for tile geometry that does not fit it.
    """
    store = SlideStore(store_path, labels_path=labels_path)
    shift = shift or 0
    if size <= 0 or not 0 <= shift < size:
        raise InputError(None, f"tiles need 0 <= shift < size, got size {size} and shift {shift}")
    block = math.gcd(size, shift)
    height, width = store.shape
    grids = [0] + ([shift] if shift else [])
    origins = [(grid, y, x) for grid in grids for y in range(grid, height, size) for x in range(grid, width, size)]
    grid, y, x = (np.array(column, dtype=np.int64) for column in zip(*origins, strict=False))
    padded_blocks = (
        int((y.max() + size) // block),
        int((x.max() + size) // block),
    )

    value_sums, square_sums, mask_sums = _level0_block_sums(store, block, padded_blocks)
    if tissue_level is None:
        tissue_level = _default_tissue_level(store, size, block)
    tissue_sums = _tissue_block_areas(store, tissue_level, block, padded_blocks, saturation_threshold)

    k = size // block
    by, bx = y // block, x // block

    def tile_sums(block_sums: np.ndarray) -> np.ndarray:
        integral = np.zeros((block_sums.shape[0] + 1, block_sums.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(block_sums, axis=0), axis=1, out=integral[1:, 1:])
        return integral[by + k, bx + k] - integral[by, bx + k] - integral[by + k, bx] + integral[by, bx]

    n_values = 3 * size * size
    img_std = [
        math.sqrt(n_values * q - s * s) / n_values
        for s, q in zip(tile_sums(value_sums).tolist(), tile_sums(square_sums).tolist(), strict=False)
    ]
    mask_area = tile_sums(mask_sums)
    mask_ratio = mask_area / float(size * size)
    binned = np.minimum(np.round(mask_ratio * MASK_BINS), MAX_BIN).astype(np.int64)
    return pd.DataFrame(
        {
            "slide": pd.Series([slide_id] * len(y), dtype="str"),
            "y": y,
            "x": x,
            "size": np.full(len(y), size, dtype=np.int64),
            "grid": grid,
            "mask_area": mask_area,
            "mask_ratio": mask_ratio,
            "tissue_ratio": tile_sums(tissue_sums) / float(size * size),
            "img_std": np.array(img_std, dtype=np.float64),
            "binned": binned,
            "is_masked": binned > 0,
        }
    )


def write_tile_index(tiles: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a tile index to the parquet file ``path`` (pyarrow) atomically."""
    with atomic_output(path) as tmp:
        tiles.to_parquet(tmp, engine="pyarrow", index=False)


def _add_block_sums(out: np.ndarray, rows: np.ndarray, row0: int, block: int) -> None:
    """Add the per-block sums of ``rows`` (``(n, width)``, rows ``row0:row0+n``) into ``out``.

    ``out`` is int64, indexed by block ``(row // block, column // block)``.
    """
    n, width = rows.shape
    col_starts = np.arange(0, width, block)
    y = row0
    while y < row0 + n:
        end = min((y // block + 1) * block, row0 + n)
        column_sums = rows[y - row0 : end - row0].sum(axis=0, dtype=np.int64)
        out[y // block, : col_starts.size] += np.add.reduceat(column_sums, col_starts)
        y = end


def _level0_block_sums(
    store: SlideStore, block: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block sums over level 0: values, squared values (all channels) and mask pixels.

    Each is an int64 array of ``shape`` blocks; blocks past the slide stay 0.
    """
    image = store.levels[0]
    height, _ = store.shape
    value_sums = np.zeros(shape, dtype=np.int64)
    square_sums = np.zeros(shape, dtype=np.int64)
    mask_sums = np.zeros(shape, dtype=np.int64)
    band_rows = image.chunks[1]
    for row0 in range(0, height, band_rows):
        band = image[:, row0 : row0 + band_rows, :]
        for channel in band:
            _add_block_sums(value_sums, channel, row0, block)
            _add_block_sums(square_sums, SQUARES[channel], row0, block)
        if store.labels is not None:
            labels = store.labels[row0 : row0 + band_rows, :]
            _add_block_sums(mask_sums, labels != 0, row0, block)
    return value_sums, square_sums, mask_sums


def _default_tissue_level(store: SlideStore, size: int, block: int) -> int:
    """The level nearest ``size / 32`` downsample among those whose ``2^l`` divides ``block``."""
    target = math.log2(size / TISSUE_PIXELS_PER_TILE_SIDE)
    usable = [level for level in range(len(store.levels)) if block % 2**level == 0]
    return min(usable, key=lambda level: (abs(level - target), level))


def _tissue_block_areas(
    store: SlideStore, level: int, block: int, shape: tuple[int, int], saturation_threshold: int
) -> np.ndarray:
    """Per-block tissue area in level-0 pixels, measured on pyramid ``level``.

    A level-``l`` pixel ``(i, j)`` stands for level-0 pixels
    ``[i 2^l, (i+1) 2^l) x [j 2^l, (j+1) 2^l)`` clipped to the slide; the
    clipped area is what it adds when it is tissue.
    """
    if not 0 <= level < len(store.levels):
        raise InputError(None, f"tissue level {level} not in the store's levels 0..{len(store.levels) - 1}")
    scale = 2**level
    if block % scale:
        raise InputError(None, f"tissue level {level}: downsample {scale} does not divide the tile grid step {block}")
    height, width = store.shape
    level_height, level_width = store.level_shape(level)
    if (level_height, level_width) != (-(-height // scale), -(-width // scale)):
        raise InputError(
            store.path, f"level {level} is {level_height} x {level_width}, not 2^{level} smaller than level 0"
        )
    column_area = np.minimum(scale, width - np.arange(level_width) * scale)
    row_area = np.minimum(scale, height - np.arange(level_height) * scale)
    areas = np.zeros(shape, dtype=np.int64)
    image = store.levels[level]
    band_rows = image.chunks[1]
    for row0 in range(0, level_height, band_rows):
        band = image[:, row0 : row0 + band_rows, :]
        tissue = tissue_mask(band, saturation_threshold)
        weighted = tissue * column_area * row_area[row0 : row0 + band.shape[1], None]
        _add_block_sums(areas, weighted, row0, block // scale)
    return areas
