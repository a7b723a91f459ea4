"""Object-level detection scores: predicted and true glomeruli matched one to one at IoU >= 0.5, band by band.

Objects are the 8-connected components of a ``(y, x)`` mask (OpenCV's
labelling): the predicted objects of a probability store at cutoff ``c``
are those of ``value >= c``; the true objects those of ``truth != 0``. A
predicted object P and a true object T *match* when their intersection
over union ``|P & T| / |P | T|`` is at least 0.5,
tested in integers as ``3 |P & T| >= |P| + |T|``.

At IoU >= 0.5 a match is unique, so no assignment is needed. If P matched
two true objects T1 and T2 (disjoint), then ``|P & Ti| >= |P | Ti| / 2 >=
|P| / 2`` for both, and ``|P & T1| + |P & T2| <= |P|``; so both are
equalities: ``|P | Ti| = |P|`` (each Ti inside P) and ``P = T1 | T2``. But
P is 8-connected and two distinct components of the truth mask are not
8-adjacent, so their union is not: a contradiction. The same holds with
the roles swapped. (At IoU > 0.5 uniqueness holds for any disjoint objects.)
Hence the matched pairs are the true positives, ``TP``.

Scores (:func:`object_scores`): precision ``TP / predicted`` (1 when
nothing is predicted), recall ``TP / true`` (1 when nothing is true), F1
``2 TP / (predicted + true)`` (1 when both are empty: the Dice of the
object sets, as the pixel Dice counts two empty masks as 1); count error
``predicted - true`` objects and relative count error ``(predicted -
true) / true`` (NaN when nothing is true).

Streaming (:class:`ObjectMatcher`): masks are read in bands of full-width
rows, and the prediction is also cut into *cells* (rectangles tiling it,
e.g. the kept centres of prediction windows; by default one cell). Each
band of the truth, and each cell's piece of a band of the prediction, is
labelled on its own; its components are *fragments*. Fragments that touch
across a band or cell border (8-connectivity: a pixel touches the three
pixels beyond the border next to it) are joined by an edge, and the
components of that graph are the objects. The pass keeps the pixel count
and the cell of every fragment, the edges, and for every predicted and
true fragment that overlap the overlap's pixel count; never a whole-slide
array. Because the prediction is cut at the cell borders, the objects of
the prediction with any set of cells cleared (windows skipped by the
classification gate, :mod:`tilepipe.evaluation.gate`) come from the same
pass: drop those cells' fragments and edges and resolve again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from tilepipe.errors import InputError
from tilepipe.evaluation.dice import RunsRows, band_rows_for, read_rles
from tilepipe.io import rle

__all__ = [
    "COUNT_COLUMNS",
    "OBJECT_COLUMNS",
    "SCORE_COLUMNS",
    "ObjectMatch",
    "ObjectMatcher",
    "match_objects",
    "object_scores",
    "submission_objects",
    "with_scores",
]

COUNT_COLUMNS = ["predicted_objects", "truth_objects", "matched_objects"]
SCORE_COLUMNS = ["object_precision", "object_recall", "object_f1", "count_error", "relative_count_error"]
OBJECT_COLUMNS = COUNT_COLUMNS + SCORE_COLUMNS


def object_scores(predicted, truth, matched) -> dict[str, np.ndarray]:
    """Return the detection scores of object counts (scalars or arrays of equal shape), as float64 arrays.

    Keys :data:`SCORE_COLUMNS`: ``object_precision`` ``matched / predicted``
    (1 when ``predicted`` is 0), ``object_recall`` ``matched / truth`` (1
    when ``truth`` is 0), ``object_f1`` ``2 matched / (predicted + truth)``
    (1 when both are 0), ``count_error`` ``predicted - truth`` and
    ``relative_count_error`` ``(predicted - truth) / truth`` (NaN when
    ``truth`` is 0).
    """
    predicted, truth, matched = (np.asarray(a, dtype=np.float64) for a in (predicted, truth, matched))
    total = predicted + truth
    return {
        "object_precision": np.where(predicted > 0, matched / np.maximum(predicted, 1), 1.0),
        "object_recall": np.where(truth > 0, matched / np.maximum(truth, 1), 1.0),
        "object_f1": np.where(total > 0, 2 * matched / np.maximum(total, 1), 1.0),
        "count_error": predicted - truth,
        "relative_count_error": np.where(truth > 0, (predicted - truth) / np.maximum(truth, 1), np.nan),
    }


def with_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with :data:`SCORE_COLUMNS` computed from its :data:`COUNT_COLUMNS` (replaced if present)."""
    scores = object_scores(*(frame[column].to_numpy() for column in COUNT_COLUMNS))
    return frame.assign(**scores)


@dataclass(frozen=True, eq=False)
class ObjectMatch:
    """The objects of one predicted mask and one true mask, and their overlaps.

    ``predicted_area`` ``(n_p,)`` and ``truth_area`` ``(n_t,)``: pixels per
    object (int64; objects in no particular order). ``pairs`` ``(k, 2)``:
    ``(predicted index, true index)`` of every overlapping pair, each once;
    ``overlap`` ``(k,)``: their shared pixels.
    """

    predicted_area: np.ndarray
    truth_area: np.ndarray
    pairs: np.ndarray
    overlap: np.ndarray

    @property
    def matched_pairs(self) -> np.ndarray:
        """``(m, 2)`` int64: the pairs with IoU >= 0.5 (``3 overlap >= |P| + |T|``), unique both ways."""
        union_plus = self.predicted_area[self.pairs[:, 0]] + self.truth_area[self.pairs[:, 1]]
        return self.pairs[3 * self.overlap >= union_plus]

    def counts(self) -> dict[str, int]:
        """Return ``predicted_objects``, ``truth_objects`` and ``matched_objects`` (true positives)."""
        return {
            "predicted_objects": len(self.predicted_area),
            "truth_objects": len(self.truth_area),
            "matched_objects": len(self.matched_pairs),
        }


def _label(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Label ``mask`` ``(rows, cols)`` (non-zero = foreground), 8-connected: ``(count, labels 1..count, pixels per label)``."""
    mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    return n - 1, labels, stats[1:, cv2.CC_STAT_AREA].astype(np.int64)


def _touching(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Return the ``(k, 2)`` ids of two adjacent parallel lines of pixels (rows or columns) that touch.

    8-connectivity: ``after[i]`` touches ``before[i - 1]``, ``before[i]``
    and ``before[i + 1]``. Ids >= 0 are fragments, negative ids background;
    pairs of equal ids are left out.
    """
    found = []
    for shift in (-1, 0, 1):
        a = before[max(0, shift) : len(before) + min(0, shift)]
        b = after[max(0, -shift) : len(after) + min(0, -shift)]
        both = (a >= 0) & (b >= 0) & (a != b)
        found.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _global(local: np.ndarray, offset: int) -> np.ndarray:
    """Local labels (0 = background, ``l`` = fragment ``offset + l - 1``) as global ids (-1 = background)."""
    return np.where(local > 0, local.astype(np.int64) + offset - 1, -1)


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    """Return the smallest node id of each node's connected component in the graph of ``n`` nodes and ``edges`` ``(k, 2)``.

    Min-label propagation with pointer jumping, vectorised: each round
    lowers every node and every label's owner to the smallest label across
    its edges; labels only fall and stay within a component, so at the
    fixed point every component carries its smallest id.
    """
    label = np.arange(n, dtype=np.int64)
    a, b = edges[:, 0], edges[:, 1]
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        new = label.copy()
        for nodes in (a, b, la, lb):
            np.minimum.at(new, nodes, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new


class ObjectMatcher:
    """Matches a predicted mask's objects with a true mask's, fed band by band; also with any cells of the prediction removed.

    ``shape``: ``(height, width)`` of both masks. ``cells``: ``(n, 4)``
    ``(y0, x0, y1, x1)`` rectangles, level-0 pixels, end exclusive, that
    tile the mask (e.g. the kept centres of prediction windows); None is
    one cell, the whole mask. The prediction is labelled cell by cell:
    a *fragment* is a component of the mask within one cell and one band,
    and fragments that touch across a cell or band border are joined by an
    edge. :meth:`finish` resolves the fragments of the cells kept into
    objects, so removing cells (gating windows: their pixels become
    background) costs no second pass over the pixels. The truth is
    labelled band by band.

    Call :meth:`add_band` for consecutive bands of full-width rows, top to
    bottom, then :meth:`finish`.
    """

    def __init__(self, shape: tuple[int, int], cells: np.ndarray | None = None):
        height, width = (int(v) for v in shape)
        self.shape = (height, width)
        self.cells = np.array([[0, 0, height, width]] if cells is None else cells, dtype=np.int64).reshape(-1, 4)
        self.top = 0  # first row of the next band
        self.truth_count, self.truth_last = 0, None
        self.truth_area: list[np.ndarray] = []
        self.truth_edges: list[np.ndarray] = []
        self.count, self.last = 0, None
        self.area: list[np.ndarray] = []
        self.cell: list[np.ndarray] = []
        self.edges: list[np.ndarray] = []
        self.overlaps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add_band(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Add the next band of rows: ``truth`` and ``predicted`` ``(rows, width)`` arrays, non-zero = foreground."""
        rows, width = np.shape(truth)
        if np.shape(predicted) != (rows, width) or width != self.shape[1] or self.top + rows > self.shape[0]:
            raise ValueError(
                f"bands must be (rows, {self.shape[1]}) within {self.shape[0]} rows; "
                f"got {np.shape(truth)} and {np.shape(predicted)} at row {self.top}"
            )
        top, bottom = self.top, self.top + rows
        truth_count, truth_labels, truth_area = _label(truth)
        self.truth_last, edges = self._rows(truth_labels, self.truth_count, self.truth_last)
        self.truth_edges.append(edges)
        self.truth_area.append(truth_area)
        labels, areas, cells = self._label_cells(np.asarray(predicted) != 0, top, bottom)
        offset = self.count
        self.last, edges = self._rows(labels, offset, self.last)
        self.edges.append(edges)
        self.edges.extend(self._cuts(labels, offset, top, bottom))
        self.area.extend(areas)
        self.cell.extend(cells)
        p, t, shared = _overlap_counts(labels, truth_labels, truth_count)
        self.overlaps.append((p + offset - 1, t + self.truth_count - 1, shared))
        self.count += sum(len(a) for a in areas)
        self.truth_count += truth_count
        self.top = bottom

    def _label_cells(self, mask: np.ndarray, top: int, bottom: int) -> tuple[np.ndarray, list, list]:
        """Label each cell's piece of the band ``mask`` on its own; return band-local labels, areas and cells."""
        labels = np.zeros(mask.shape, np.int32)
        areas, cells, count = [], [], 0
        y0, x0, y1, x1 = self.cells.T
        for i in np.flatnonzero((y0 < bottom) & (y1 > top)):
            piece = (slice(max(y0[i], top) - top, min(y1[i], bottom) - top), slice(x0[i], x1[i]))
            if not mask[piece].any():
                continue
            n, piece_labels, area = _label(mask[piece])
            piece_labels[piece_labels > 0] += count
            labels[piece] = piece_labels
            areas.append(area)
            cells.append(np.full(n, i, np.int64))
            count += n
        return labels, areas, cells

    @staticmethod
    def _rows(labels: np.ndarray, offset: int, last: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The band's last row as global ids, and the edges from the previous band's last row to its first."""
        edges = np.zeros((0, 2), np.int64) if last is None else _touching(last, _global(labels[0], offset))
        return _global(labels[-1], offset), edges

    def _cuts(self, labels: np.ndarray, offset: int, top: int, bottom: int) -> list[np.ndarray]:
        """Edges between fragments of neighbouring cells inside the band, across every cell border it crosses."""
        y0, x0, y1, _ = self.cells.T
        crossing = (y0 < bottom) & (y1 > top)
        columns = [(labels[:, x - 1], labels[:, x]) for x in np.unique(x0[crossing & (x0 > 0)])]
        rows = [(labels[y - top - 1], labels[y - top]) for y in np.unique(y0[crossing & (y0 > top)])]
        return [_touching(_global(a, offset), _global(b, offset)) for a, b in columns + rows]

    def finish(self, removed: Sequence[np.ndarray] | None = None) -> list[ObjectMatch]:
        """Return the :class:`ObjectMatch` of the prediction with each of ``removed`` cells cleared.

        ``removed``: boolean arrays over the cells (True = cleared), one per
        match returned; None: one match, nothing cleared. All bands must
        have been added.
        """
        if self.top != self.shape[0]:
            raise ValueError(f"bands cover rows 0:{self.top} of {self.shape[0]}")
        truth_root = _components(self.truth_count, np.concatenate(self.truth_edges))
        truth_ids, truth_index = np.unique(truth_root, return_inverse=True)
        truth_area = np.bincount(truth_index, weights=np.concatenate(self.truth_area), minlength=len(truth_ids))
        truth_area = truth_area.astype(np.int64)
        area, cell = (np.concatenate(part) if part else np.zeros(0, np.int64) for part in (self.area, self.cell))
        edges = np.concatenate(self.edges)
        p, t, shared = (np.concatenate(part) for part in zip(*self.overlaps, strict=True))
        matches = []
        for cleared in [np.zeros(len(self.cells), bool)] if removed is None else removed:
            keep = ~np.asarray(cleared, bool)[cell]
            active = edges[keep[edges[:, 0]] & keep[edges[:, 1]]]
            roots, index = np.unique(_components(self.count, active)[keep], return_inverse=True)
            object_of = np.full(self.count, -1, np.int64)
            object_of[keep] = index
            object_area = np.bincount(index, weights=area[keep], minlength=len(roots)).astype(np.int64)
            kept = keep[p]
            keys = object_of[p[kept]] * max(len(truth_area), 1) + truth_index[t[kept]]
            keys, inverse = np.unique(keys, return_inverse=True)
            overlap = np.bincount(inverse, weights=shared[kept], minlength=len(keys)).astype(np.int64)
            pairs = np.stack([keys // max(len(truth_area), 1), keys % max(len(truth_area), 1)], axis=1)
            matches.append(ObjectMatch(object_area, truth_area, pairs, overlap))
        return matches


def _overlap_counts(predicted: np.ndarray, truth: np.ndarray, truth_count: int) -> tuple[np.ndarray, ...]:
    """Return ``(predicted label, true label, shared pixels)`` of the overlapping fragments of two label images."""
    both = (predicted > 0) & (truth > 0)
    keys = predicted[both].astype(np.int64) * (truth_count + 1) + truth[both]
    keys, counts = np.unique(keys, return_counts=True)
    return keys // (truth_count + 1), keys % (truth_count + 1), counts.astype(np.int64)


def match_objects(predicted, truth, *, cutoff: int = 1, band_rows: int | None = None) -> ObjectMatch:
    """Match the objects of ``predicted >= cutoff`` with those of ``truth != 0``.

    ``predicted`` (e.g. a probability store's ``(y, x)`` uint8 array,
    ``round(p * 255)``, or a 0/1 mask with ``cutoff`` 1) and ``truth``
    (``(y, x)``, non-zero = foreground) are read by row bands
    ``array[y0:y1]`` (zarr arrays, numpy arrays,
    :class:`tilepipe.evaluation.dice.RunsRows`) of ``band_rows`` rows
    (default: about 16 M pixels, whole chunks of ``predicted``). The shapes
    must match (ValueError).
    """
    if tuple(predicted.shape) != tuple(truth.shape):
        raise ValueError(f"predicted shape {tuple(predicted.shape)} differs from truth shape {tuple(truth.shape)}")
    band_rows = band_rows or band_rows_for(predicted)
    matcher = ObjectMatcher(predicted.shape)
    for y0 in range(0, predicted.shape[0], band_rows):
        band = np.asarray(predicted[y0 : y0 + band_rows]) >= cutoff
        matcher.add_band(np.asarray(truth[y0 : y0 + band_rows]), band)
    return matcher.finish()[0]


def submission_objects(
    submission_csv: str | os.PathLike, truth_csv: str | os.PathLike, shapes: Mapping[str, tuple[int, int]]
) -> pd.DataFrame:
    """Return the object counts and scores of each image of the truth CSV against the submission (both ``id,predicted`` RLE).

    ``shapes``: ``(height, width)`` of each image. Columns ``id`` and
    :data:`OBJECT_COLUMNS`, in the truth's order. Raises InputError naming
    the submission when an id of the truth is missing from it, and naming
    the file of a malformed RLE. Each mask is decoded a row band at a time.
    """
    submission, truth = read_rles(submission_csv), read_rles(truth_csv)
    rows = []
    for slide, truth_rle in truth.items():
        if slide not in submission:
            raise InputError(submission_csv, f"id {slide} of the truth has no row")
        shape = shapes[slide]
        predicted = RunsRows(rle.parse(submission[slide], shape, f"{submission_csv} (id {slide})"))
        true = RunsRows(rle.parse(truth_rle, shape, f"{truth_csv} (id {slide})"))
        rows.append({"id": slide, **match_objects(predicted, true).counts()})
    return with_scores(pd.DataFrame(rows, columns=["id", *COUNT_COLUMNS]))
