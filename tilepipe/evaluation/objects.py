"""Object-level detection scores: predicted and true glomeruli matched one to one at IoU >= 0.5, band by band.

Objects are the 8-connected components of a ``(y, x)`` mask (OpenCV's
labelling): the predicted objects of a probability store at cutoff ``c``
are those of ``value >= c``; the true objects those of ``truth != 0``. A
predicted object P and a true object T *match* when their intersection
over union ``|P & T| / |P | T|`` is at least :data:`MATCH_IOU` = 0.5,
tested in integers as ``3 |P & T| >= |P| + |T|``.

At IoU >= 0.5 a match is unique, so no assignment is needed. If P matched
two true objects T1 and T2 (disjoint), then ``|P & Ti| >= |P | Ti| / 2 >=
|P| / 2`` for both, and ``|P & T1| + |P & T2| <= |P|``; so both are
equalities: ``|P | Ti| = |P|`` (each Ti inside P) and ``P = T1 | T2``. But
P is 8-connected and two distinct components of the truth mask are not
8-adjacent, so their union is not: a contradiction. The same holds with
the roles swapped. (At IoU > 0.5 uniqueness holds for any two sets.)
Hence the matched pairs are the true positives, ``TP``.

Scores (:func:`object_scores`): precision ``TP / predicted`` (1 when
nothing is predicted), recall ``TP / true`` (1 when nothing is true), F1
``2 TP / (predicted + true)`` (1 when both are empty: the Dice of the
object sets, as the pixel Dice counts two empty masks as 1); count error
``predicted - true`` objects and relative count error ``(predicted -
true) / true`` (NaN when nothing is true).

Streaming (:class:`ObjectMatcher`): masks are read in bands of full-width
rows. Each band is labelled on its own; the band's components
("fragments") of one object are joined by a union-find over the two rows
at each band boundary (a pixel touches the three pixels below it). The
pass keeps the pixel count of every fragment and, for every predicted
fragment and true fragment that overlap, the overlap's pixel count; at
the end fragments are resolved into objects and their areas and overlaps
summed. Memory is a few bands plus these counts, never a whole-slide
array. One truth can be matched against several predicted masks in the
same pass (the classification-gate sweep, :mod:`tilepipe.evaluation.gate`).
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
    "MATCH_IOU",
    "OBJECT_COLUMNS",
    "SCORE_COLUMNS",
    "ObjectMatch",
    "ObjectMatcher",
    "match_objects",
    "object_scores",
    "submission_objects",
    "with_scores",
]

MATCH_IOU = 0.5  # documentation of the integer test 3 |P & T| >= |P| + |T|
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


@dataclass(frozen=True, eq=False)
class _BandLabels:
    """One band's 8-connected components: local labels ``1..count`` (0 is background)."""

    count: int
    area: np.ndarray  # (count,) int64 pixels per fragment
    first: np.ndarray  # (width,) int32 labels of the band's first row
    last: np.ndarray  # (width,) int32 labels of the band's last row
    labels: np.ndarray  # (rows, width) int32


def _label(mask: np.ndarray) -> _BandLabels:
    """Label the band ``mask`` ``(rows, width)`` (non-zero = foreground), 8-connected."""
    mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    return _BandLabels(
        count=n - 1,
        area=stats[1:, cv2.CC_STAT_AREA].astype(np.int64),
        first=labels[0].copy(),
        last=labels[-1].copy(),
        labels=labels,
    )


class _Fragments:
    """The fragments of one mask, added band by band, and the objects they join into (union-find)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.areas: list[np.ndarray] = []
        self.last: np.ndarray | None = None  # global ids of the previous band's last row, -1 = background

    def add(self, band: _BandLabels) -> int:
        """Add ``band``'s fragments; join those touching the previous band's; return the id offset.

        Local label ``l`` of ``band`` is fragment ``offset + l - 1``.
        """
        offset = len(self.parent)
        self.parent.extend(range(offset, offset + band.count))
        self.areas.append(band.area)
        first = np.where(band.first > 0, band.first.astype(np.int64) + offset - 1, -1)
        if self.last is not None and band.count:
            for a, b in _touching(self.last, first):
                self._union(int(a), int(b))
        self.last = np.where(band.last > 0, band.last.astype(np.int64) + offset - 1, -1)
        return offset

    def _find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def objects(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(object index of each fragment, pixels per object)``, objects numbered ``0..n-1``."""
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:  # pointer jumping: every fragment ends at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        _, index = np.unique(parent, return_inverse=True)
        area = np.concatenate(self.areas) if self.areas else np.zeros(0, np.int64)
        n = int(index.max()) + 1 if index.size else 0
        return index, np.bincount(index, weights=area, minlength=n).astype(np.int64)


def _touching(above: np.ndarray, below: np.ndarray) -> np.ndarray:
    """Return the unique ``(above id, below id)`` pairs of two adjacent rows that touch (8-connectivity); ids >= 0."""
    found = []
    for shift in (-1, 0, 1):  # below[x] touches above[x - 1], above[x] and above[x + 1]
        a = above[max(0, shift) : len(above) + min(0, shift)]
        b = below[max(0, -shift) : len(below) + min(0, -shift)]
        both = (a >= 0) & (b >= 0)
        found.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _overlaps(predicted: _BandLabels, truth: _BandLabels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(predicted label, true label, shared pixels)`` of the overlapping local fragments of one band."""
    both = (predicted.labels > 0) & (truth.labels > 0)
    keys = predicted.labels[both].astype(np.int64) * (truth.count + 1) + truth.labels[both]
    keys, counts = np.unique(keys, return_counts=True)
    return keys // (truth.count + 1), keys % (truth.count + 1), counts.astype(np.int64)


class ObjectMatcher:
    """Matches the objects of one true mask with those of ``variants`` predicted masks, fed band by band.

    Call :meth:`add_band` for consecutive bands of full-width rows, top to
    bottom, then :meth:`finish`.
    """

    def __init__(self, variants: int = 1):
        if variants < 1:
            raise ValueError(f"need at least one predicted mask, got {variants}")
        self.truth = _Fragments()
        self.predicted = [_Fragments() for _ in range(variants)]
        self.pairs: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(variants)]
        self.width: int | None = None

    def add_band(self, truth: np.ndarray, predicted: Sequence[np.ndarray]) -> None:
        """Add the next band: ``truth`` and each of ``predicted`` (one per variant) ``(rows, width)``, non-zero = foreground.

        Variants given the same array object are labelled once.
        """
        if len(predicted) != len(self.predicted):
            raise ValueError(f"expected {len(self.predicted)} predicted bands, got {len(predicted)}")
        shape = np.shape(truth)
        if self.width is None:
            self.width = shape[1]
        if shape[1] != self.width or any(np.shape(band) != shape for band in predicted):
            raise ValueError(
                f"bands must all be (rows, {self.width}); got {shape} and {[np.shape(b) for b in predicted]}"
            )
        truth_labels = _label(truth)
        truth_offset = self.truth.add(truth_labels)
        labelled: dict[int, tuple[_BandLabels, tuple]] = {}
        for fragments, pairs, band in zip(self.predicted, self.pairs, predicted, strict=True):
            if id(band) not in labelled:
                labels = _label(band)
                labelled[id(band)] = (labels, _overlaps(labels, truth_labels))
            labels, (p, t, shared) = labelled[id(band)]
            offset = fragments.add(labels)
            if len(shared):
                pairs.append((p + offset - 1, t + truth_offset - 1, shared))

    def finish(self) -> list[ObjectMatch]:
        """Return the :class:`ObjectMatch` of each predicted mask with the truth, in the order of the variants."""
        truth_index, truth_area = self.truth.objects()
        matches = []
        for fragments, pairs in zip(self.predicted, self.pairs, strict=True):
            index, area = fragments.objects()
            if pairs:
                p, t, shared = (np.concatenate(part) for part in zip(*pairs, strict=True))
                keys = index[p] * max(len(truth_area), 1) + truth_index[t]
                keys, inverse = np.unique(keys, return_inverse=True)
                overlap = np.bincount(inverse, weights=shared).astype(np.int64)
                pair_ids = np.stack([keys // max(len(truth_area), 1), keys % max(len(truth_area), 1)], axis=1)
            else:
                pair_ids, overlap = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
            matches.append(ObjectMatch(predicted_area=area, truth_area=truth_area, pairs=pair_ids, overlap=overlap))
        return matches


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
    matcher = ObjectMatcher()
    for y0 in range(0, predicted.shape[0], band_rows):
        band = np.asarray(predicted[y0 : y0 + band_rows]) >= cutoff
        matcher.add_band(np.asarray(truth[y0 : y0 + band_rows]), [band])
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
