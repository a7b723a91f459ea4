"""Per-epoch balanced tile sampling (the recipe's two-level balance).

Tiles are rows of a tile index (``tilepipe.data.tile_index``): they need the
columns ``slide``, ``is_masked`` and ``binned``, and ``tissue_ratio`` /
``img_std`` when filtered by them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tilepipe.errors import InputError

__all__ = ["background_filtered", "sample_epoch", "training_tiles", "validation_tiles"]


def sample_epoch(tiles: pd.DataFrame, epoch: int, seed: int, fold: int = 0) -> pd.DataFrame:
    """Return the tiles drawn for one training epoch from ``tiles``.

    ``tiles`` are the fold's training tiles, already filtered (see
    :func:`training_tiles`). The recipe, drawn by position with replacement:

    1. ``n = min(#masked, #unmasked)``; draw ``n`` unmasked and ``n`` masked tiles;
    2. within the ``n`` masked ones, draw ``int(mean bin count)`` tiles from
       every ``binned`` value present (bins in ascending order).

    The result is the masked tiles (bin by bin) then the unmasked ones, with
    a fresh RangeIndex. There are ``n`` unmasked tiles and ``b * int(n / b)``
    masked ones for ``b`` bins present, so the classes are equal when ``b``
    divides ``n`` and otherwise differ by less than ``b``, as in the recipe.

    Randomness comes only from ``numpy.random.default_rng([seed, fold, epoch])``
    (all three non-negative), so a sample is a pure function of the tiles
    and of seed, fold and epoch. Raises InputError (no path) when the tiles
    lack masked or unmasked tiles: balanced sampling needs both.
    """
    is_masked = tiles["is_masked"].to_numpy(dtype=bool)
    masked = np.flatnonzero(is_masked)
    unmasked = np.flatnonzero(~is_masked)
    if masked.size == 0 or unmasked.size == 0:
        raise InputError(
            None,
            f"balanced sampling needs masked and unmasked tiles; fold {fold} has "
            f"{masked.size} masked and {unmasked.size} unmasked training tiles",
        )
    rng = np.random.default_rng([seed, fold, epoch])
    n = min(masked.size, unmasked.size)
    unmasked_drawn = unmasked[rng.integers(0, unmasked.size, n)]
    masked_drawn = masked[rng.integers(0, masked.size, n)]

    bins = tiles["binned"].to_numpy()[masked_drawn]
    present = np.unique(bins)
    per_bin = n // present.size  # int(mean bin count): the counts sum to n
    by_bin = []
    for value in present:
        members = masked_drawn[bins == value]
        by_bin.append(members[rng.integers(0, members.size, per_bin)])
    return tiles.iloc[np.concatenate([*by_bin, unmasked_drawn])].reset_index(drop=True)


def training_tiles(
    tiles: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    min_tissue_ratio: float | None = None,
    min_img_std: float | None = None,
) -> pd.DataFrame:
    """Return the training tiles of ``fold``: slides whose fold is not ``fold``.

    That is fold ``-1`` (always in training) and the other folds. Tiles are
    kept when ``tissue_ratio > min_tissue_ratio`` and ``img_std > min_img_std``
    (each filter off when None; the recipe used ``img_std > 10``). Row order
    is kept; the index is reset.
    """
    fold_of = _fold_of_tiles(tiles, folds, fold)
    return background_filtered(tiles[fold_of != fold], min_tissue_ratio, min_img_std)


def validation_tiles(
    tiles: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    min_tissue_ratio: float | None = None,
    min_img_std: float | None = None,
) -> pd.DataFrame:
    """Return the validation tiles of ``fold``: slides whose fold is ``fold``.

    Same filters and row order as :func:`training_tiles`.
    """
    fold_of = _fold_of_tiles(tiles, folds, fold)
    return background_filtered(tiles[fold_of == fold], min_tissue_ratio, min_img_std)


def _fold_of_tiles(tiles: pd.DataFrame, folds: pd.DataFrame, fold: int) -> np.ndarray:
    """Fold of each tile's slide (int64 array aligned with ``tiles``)."""
    if fold < 0 or fold not in set(folds["fold"]):
        raise InputError(None, f"fold {fold} is not a fold of the split (folds: {sorted(set(folds['fold']))})")
    fold_of = tiles["slide"].map(dict(zip(folds["slide"], folds["fold"], strict=False)))
    if fold_of.isna().any():
        unknown = ", ".join(map(str, tiles.loc[fold_of.isna(), "slide"].unique()))
        raise InputError(None, f"tiles of slide(s) {unknown} have no fold")
    return fold_of.to_numpy(dtype=np.int64)


def background_filtered(tiles: pd.DataFrame, min_tissue_ratio: float | None, min_img_std: float | None) -> pd.DataFrame:
    """Return the tiles with ``tissue_ratio > min_tissue_ratio`` and ``img_std > min_img_std`` (None: no filter),
    row order kept, index reset."""
    keep = np.ones(len(tiles), dtype=bool)
    if min_tissue_ratio is not None:
        keep &= tiles["tissue_ratio"].to_numpy() > min_tissue_ratio
    if min_img_std is not None:
        keep &= tiles["img_std"].to_numpy() > min_img_std
    return tiles[keep].reset_index(drop=True)
