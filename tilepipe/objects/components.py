"""Connected components of a whole-slide mask, band by band, in memory bounded by the slide's width.

A slide's mask (``probability >= cutoff``, :mod:`tilepipe.stores.probability`)
is read in bands of full-width rows. Each band is labelled on its own
(8-connected, OpenCV); components that touch across a band boundary are
merged with a union-find over the two boundary rows, so an object is the
same whatever the band height. Per component the pass keeps its pixel
count, bounding box, the sums of its probability (and of an optional
second map, e.g. the ensemble's spread) and one pixel inside it; never a
whole-slide array.

:func:`object_mask` then cuts one object out of its bounding box: the
window's component that holds the object's seed pixel is exactly the
object (every pixel of the object, and every path joining them, lies in
its box).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SlideObjects", "find_objects", "object_mask"]

BAND_ROWS = 256


@dataclass(frozen=True)
class SlideObjects:
    """The connected components of a slide's mask, one row per object, ordered by (top, left).

    Arrays of length ``n``: ``area`` (pixels), ``box`` ``(n, 4)`` as
    ``(y0, x0, y1, x1)`` level-0 pixels, end exclusive, ``seed`` ``(n, 2)``
    ``(y, x)`` of one pixel of the object, ``value_sum`` the sum of the
    stored probability values (0..255) over the object, ``extra_sum`` the
    same for the second map (zeros without one), ``extra_high`` the count
    of the object's pixels where the second map reaches ``extra_cutoff``
    (zeros without either).
    """

    area: np.ndarray
    box: np.ndarray
    seed: np.ndarray
    value_sum: np.ndarray
    extra_sum: np.ndarray
    extra_high: np.ndarray

    def __len__(self) -> int:
        return len(self.area)


class _UnionFind:
    def __init__(self) -> None:
        self.parent = np.zeros(1, dtype=np.int64)

    def grow(self, n: int) -> None:
        self.parent = np.concatenate([self.parent, np.arange(len(self.parent), len(self.parent) + n)])

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def find_objects(
    values: np.ndarray,
    cutoff: int,
    *,
    extra: np.ndarray | None = None,
    extra_cutoff: int | None = None,
    min_area: int = 1,
    band_rows: int = BAND_ROWS,
) -> SlideObjects:
    """Return the 8-connected components of ``values >= cutoff`` with at least ``min_area`` pixels.

    ``values`` is a ``(y, x)`` uint8 array-like read by row slices (a zarr
    array of a probability store, or numpy); ``extra`` an optional array of
    the same shape whose sum over each object is kept too, and with
    ``extra_cutoff`` the count of pixels where it is at least that. Reads
    ``band_rows`` rows at a time; memory is a few bands, never the slide.
    """
    height, width = values.shape
    if extra is not None and extra.shape != values.shape:
        raise ValueError(f"extra has shape {extra.shape}, values {values.shape}")
    uf = _UnionFind()
    area: list[np.ndarray] = [np.zeros(1, np.int64)]
    y0s, x0s, y1s, x1s = ([np.zeros(1, np.int64)] for _ in range(4))
    seeds: list[np.ndarray] = [np.zeros((1, 2), np.int64)]
    sums: list[np.ndarray] = [np.zeros(1, np.float64)]
    extras: list[np.ndarray] = [np.zeros(1, np.float64)]
    highs: list[np.ndarray] = [np.zeros(1, np.float64)]
    next_id = 1
    last_row: np.ndarray | None = None
    for top in range(0, height, band_rows):
        band = np.asarray(values[top : top + band_rows])
        mask = (band >= cutoff).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        count = n - 1
        flat = labels.ravel()
        if count:
            first = np.full(n, -1, dtype=np.int64)
            order = np.flatnonzero(flat)
            first_seen = np.unique(flat[order], return_index=True)[1]
            first[1:] = order[first_seen]
            uf.grow(count)
            area.append(stats[1:, cv2.CC_STAT_AREA].astype(np.int64))
            x0 = stats[1:, cv2.CC_STAT_LEFT].astype(np.int64)
            y0 = stats[1:, cv2.CC_STAT_TOP].astype(np.int64) + top
            x0s.append(x0)
            y0s.append(y0)
            x1s.append(x0 + stats[1:, cv2.CC_STAT_WIDTH])
            y1s.append(y0 + stats[1:, cv2.CC_STAT_HEIGHT])
            seeds.append(np.stack([first[1:] // width + top, first[1:] % width], axis=1))
            sums.append(np.bincount(flat, weights=band.ravel().astype(np.float64), minlength=n)[1:])
            if extra is not None:
                extra_band = np.asarray(extra[top : top + band_rows]).ravel().astype(np.float64)
                extras.append(np.bincount(flat, weights=extra_band, minlength=n)[1:])
            else:
                extras.append(np.zeros(count))
            if extra is not None and extra_cutoff is not None:
                highs.append(np.bincount(flat, weights=extra_band >= extra_cutoff, minlength=n)[1:])
            else:
                highs.append(np.zeros(count))
        global_labels = np.where(labels > 0, labels.astype(np.int64) + (next_id - 1), 0)
        if last_row is not None and count:
            _join(uf, last_row, global_labels[0])
        last_row = global_labels[-1]
        next_id += count
    return _merged(uf, area, (y0s, x0s, y1s, x1s), seeds, sums, extras, highs, min_area)


def _join(uf: _UnionFind, above: np.ndarray, below: np.ndarray) -> None:
    """Union the components of two adjacent rows that touch (8-connectivity: the pixel above and its diagonals)."""
    for shift in (-1, 0, 1):
        a = above[max(0, shift) : len(above) + min(0, shift)]
        b = below[max(0, -shift) : len(below) + min(0, -shift)]
        touching = (a > 0) & (b > 0)
        for pair in np.unique(np.stack([a[touching], b[touching]], axis=1), axis=0):
            uf.union(int(pair[0]), int(pair[1]))


def _merged(uf, area, box_parts, seeds, sums, extras, highs, min_area: int) -> SlideObjects:
    roots = uf.roots()
    area = np.concatenate(area)
    y0, x0, y1, x1 = (np.concatenate(part) for part in box_parts)
    seeds = np.concatenate(seeds)
    sums, extras, highs = np.concatenate(sums), np.concatenate(extras), np.concatenate(highs)
    ids, index = np.unique(roots[1:], return_inverse=True)
    n = len(ids)
    merged_area = np.bincount(index, weights=area[1:], minlength=n).astype(np.int64)
    box = np.empty((n, 4), np.int64)
    for column, values, reduce in ((0, y0, np.minimum), (1, x0, np.minimum), (2, y1, np.maximum), (3, x1, np.maximum)):
        box[:, column] = values[1:][np.unique(index, return_index=True)[1]]
        reduce.at(box[:, column], index, values[1:])
    seed = seeds[ids]
    value_sum = np.bincount(index, weights=sums[1:], minlength=n)
    extra_sum = np.bincount(index, weights=extras[1:], minlength=n)
    extra_high = np.bincount(index, weights=highs[1:], minlength=n).astype(np.int64)
    keep = merged_area >= min_area
    order = np.lexsort((box[keep, 1], box[keep, 0]))
    return SlideObjects(
        area=merged_area[keep][order],
        box=box[keep][order],
        seed=seed[keep][order],
        value_sum=value_sum[keep][order],
        extra_sum=extra_sum[keep][order],
        extra_high=extra_high[keep][order],
    )


def object_mask(values: np.ndarray, cutoff: int, box: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Return the object with pixel ``seed`` ``(y, x)`` inside ``box`` ``(y0, x0, y1, x1)`` as a uint8 0/1 window.

    The window is ``values[y0:y1, x0:x1] >= cutoff`` reduced to the
    8-connected component that holds the seed: exactly the object's pixels.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    window = (np.asarray(values[y0:y1, x0:x1]) >= cutoff).astype(np.uint8)
    _, labels = cv2.connectedComponents(window, connectivity=8, ltype=cv2.CV_32S)
    label = labels[int(seed[0]) - y0, int(seed[1]) - x0]
    if label == 0:
        raise ValueError(f"seed {tuple(seed)} is not foreground in box {tuple(box)}")
    return (labels == label).astype(np.uint8)
