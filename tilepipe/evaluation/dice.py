"""Dice of predictions against the truth: per slide, per fold, per stage, and of the submission.

A probability store (:mod:`tilepipe.inference.predict`) holds ``v = round(p * 255)``;
its mask at threshold ``t`` is ``v >= foreground_cutoff(t)``
(:mod:`tilepipe.evaluation.submission`). One streamed pass over a slide gives its
Dice at every cutoff: for each row band, a 256-bin histogram of the stored
values of all pixels and one of the pixels the truth marks foreground
(:class:`ValueHistogram`). Suffix sums of the two are the predicted and
the intersection pixel counts at each cutoff; the truth histogram's total
is the true pixel count.

Dice is ``2 |P & T| / (|P| + |T|)``, and 1 when both masks are empty.
The Kaggle score is the mean over images of the per-image Dice ("mean
Dice"); "global Dice" pools the pixels of all images into one Dice.
Out-of-fold (OOF) Dice compares each train slide's prediction by the fold
model that held it out with the slide's labels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.io import rle
from tilepipe.io.kaggle import read_id_csv
from tilepipe.stores.probability import PROBABILITY_SCALE, foreground_cutoff, read_probability
from tilepipe.stores.slide import SlideStore

__all__ = [
    "SWEEP_CUTOFFS",
    "THRESHOLD_MODES",
    "RunsRows",
    "ValueHistogram",
    "band_rows_for",
    "best_threshold",
    "dice",
    "evaluation_threshold",
    "read_histogram",
    "read_rles",
    "read_truth_rows",
    "rle_dice_counts",
    "slide_dice",
    "prediction_and_labels",
    "slide_histogram",
    "submission_dice",
    "threshold_sweep",
    "value_histogram",
    "write_csv",
    "write_histogram",
]

VALUES = PROBABILITY_SCALE + 1  # stored probability values 0..255
SWEEP_CUTOFFS = np.arange(1, VALUES)  # every cutoff that keeps some pixels out of the mask
THRESHOLD_MODES = ("fixed", "tuned")
BAND_PIXELS = 16 << 20  # pixels per row band while streaming a slide
SLIDE_COLUMNS = [
    "slide",
    "fold",
    "threshold",
    "dice",
    "intersection",
    "predicted_pixels",
    "truth_pixels",
    "best_threshold",
    "best_dice",
]
SWEEP_COLUMNS = ["cutoff", "threshold", "mean_dice", "global_dice"]
SUBMISSION_COLUMNS = ["id", "dice", "intersection", "predicted_pixels", "truth_pixels"]
HISTOGRAM_COLUMNS = ["value", "pixels", "truth_pixels"]


@dataclass(frozen=True, eq=False)
class ValueHistogram:
    """Pixel counts of one slide per stored probability value.

    ``pixels[v]``: pixels whose stored value is ``v``; ``truth[v]``: those
    of them the truth marks foreground. Both ``(256,)`` int64.
    """

    pixels: np.ndarray
    truth: np.ndarray

    def counts(self, cutoffs) -> dict[str, np.ndarray]:
        """Return the pixel counts of the mask ``value >= cutoff`` for each of ``cutoffs`` (ints 0..256).

        ``intersection`` (predicted and true), ``predicted`` and ``truth``
        (the same for every cutoff): int64 arrays shaped like ``cutoffs``.
        """
        cutoffs = np.asarray(cutoffs)
        in_range = cutoffs.size == 0 or (cutoffs.min() >= 0 and cutoffs.max() <= VALUES)
        if not np.issubdtype(cutoffs.dtype, np.integer) or not in_range:
            raise ValueError(f"cutoffs must be integers in 0..{VALUES}")
        at_or_above = {name: _suffix_sums(counts) for name, counts in (("pixels", self.pixels), ("truth", self.truth))}
        return {
            "intersection": at_or_above["truth"][cutoffs],
            "predicted": at_or_above["pixels"][cutoffs],
            "truth": np.full(cutoffs.shape, self.truth.sum(), dtype=np.int64),
        }


def _suffix_sums(counts: np.ndarray) -> np.ndarray:
    """Return ``(257,)`` int64: element ``c`` is ``counts[c:].sum()``."""
    return np.concatenate([np.cumsum(counts[::-1])[::-1], [0]]).astype(np.int64)


class RunsRows:
    """An RLE mask read by row bands like a zarr array: ``mask[y0:y1]`` is ``(n, width)`` uint8 0/1."""

    def __init__(self, runs: rle.Runs):
        self.runs = runs
        self.shape = runs.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("RunsRows reads contiguous row bands only")
        return self.runs.window(y0, max(y0, y1), 0, self.shape[1])


def value_histogram(probability, truth, *, band_rows: int | None = None) -> ValueHistogram:
    """Histogram the stored values of ``probability`` over all pixels and over ``truth``'s foreground.

    ``probability``: ``(y, x)`` uint8 ``round(p * 255)``; ``truth``:
    ``(y, x)``, non-zero = foreground; both read by row bands
    ``array[y0:y1]`` (zarr arrays, numpy arrays, :class:`RunsRows`) of
    ``band_rows`` rows (default: about :data:`BAND_PIXELS` pixels, whole
    chunks of ``probability``). The shapes must match (ValueError).
    """
    if tuple(probability.shape) != tuple(truth.shape):
        raise ValueError(f"probability shape {tuple(probability.shape)} differs from truth shape {tuple(truth.shape)}")
    height, width = probability.shape
    if band_rows is None:
        band_rows = band_rows_for(probability)
    pixels = np.zeros(VALUES, dtype=np.int64)
    true = np.zeros(VALUES, dtype=np.int64)
    for y0 in range(0, height, band_rows):
        values = np.asarray(probability[y0 : y0 + band_rows], dtype=np.uint8)
        pixels += np.bincount(values.ravel(), minlength=VALUES)
        true += np.bincount(values[np.asarray(truth[y0 : y0 + band_rows]) != 0], minlength=VALUES)
    return ValueHistogram(pixels=pixels, truth=true)


def band_rows_for(probability) -> int:
    """Return rows per band for streaming the ``(y, x)`` array ``probability``: about :data:`BAND_PIXELS`
    pixels, a multiple of the array's chunk height when it has chunks."""
    rows = max(1, BAND_PIXELS // max(1, probability.shape[1]))
    chunk_rows = getattr(probability, "chunks", None)
    if chunk_rows:
        rows = max(1, rows // chunk_rows[0]) * chunk_rows[0]
    return rows


def dice(intersection, predicted, truth) -> np.ndarray:
    """Return ``2 * intersection / (predicted + truth)`` (float64), 1 where both masks are empty."""
    intersection, predicted, truth = (np.asarray(a, dtype=np.float64) for a in (intersection, predicted, truth))
    total = predicted + truth
    return np.where(total > 0, 2 * intersection / np.maximum(total, 1), 1.0)


def slide_histogram(prediction_path: str | os.PathLike, store_path: str | os.PathLike) -> ValueHistogram:
    """Histogram the probability store ``prediction_path`` against the labels of the slide store ``store_path``.

    Raises InputError naming the store when it has no labels, and naming
    the prediction when its shape differs from the slide's.
    """
    return value_histogram(*prediction_and_labels(prediction_path, store_path))


def prediction_and_labels(prediction_path: str | os.PathLike, store_path: str | os.PathLike) -> tuple:
    """Return ``(probability, labels)``: the prediction's and the slide's ``(y, x)`` uint8 level-0 arrays (zarr).

    Raises InputError naming the store when it has no labels, and naming
    the prediction when its shape differs from the slide's.
    """
    probability = read_probability(prediction_path)
    labels = SlideStore(store_path).labels
    if labels is None:
        raise InputError(store_path, "slide store has no labels to evaluate against")
    if probability.shape != labels.shape:
        raise InputError(
            prediction_path, f"probability shape {probability.shape} differs from the slide's {labels.shape}"
        )
    return probability, labels


def write_histogram(histogram: ValueHistogram, path: str | os.PathLike) -> None:
    """Write ``histogram`` as the CSV ``path`` (``value,pixels,truth_pixels``, 256 rows), atomically."""
    frame = pd.DataFrame({"value": np.arange(VALUES), "pixels": histogram.pixels, "truth_pixels": histogram.truth})
    write_csv(frame, path)


def read_histogram(path: str | os.PathLike) -> ValueHistogram:
    """Read a histogram CSV written by :func:`write_histogram` (InputError naming ``path`` when malformed)."""
    frame = pd.read_csv(path)
    if list(frame.columns) != HISTOGRAM_COLUMNS or list(frame["value"]) != list(range(VALUES)):
        raise InputError(
            path, f"not a value histogram: expected columns {HISTOGRAM_COLUMNS} and values 0..{VALUES - 1}"
        )
    pixels, truth = frame["pixels"].to_numpy(np.int64), frame["truth_pixels"].to_numpy(np.int64)
    if (truth < 0).any() or (truth > pixels).any():
        raise InputError(path, "truth_pixels must lie between 0 and pixels")
    return ValueHistogram(pixels=pixels, truth=truth)


def threshold_sweep(histograms: Mapping[str, ValueHistogram], cutoffs: np.ndarray = SWEEP_CUTOFFS) -> pd.DataFrame:
    """Return the Dice of the slides ``histograms`` (id -> histogram) at every cutoff.

    Columns: ``cutoff`` (stored value), ``threshold`` (``cutoff / 255``
    to 4 decimals, which :func:`~tilepipe.stores.probability.foreground_cutoff`
    maps back to ``cutoff``), ``mean_dice`` (mean of per-slide Dice, the
    Kaggle score) and ``global_dice`` (all slides' pixels pooled).
    """
    if not histograms:
        raise ValueError("no slides to sweep")
    counts = [h.counts(cutoffs) for h in histograms.values()]
    per_slide = np.stack([dice(c["intersection"], c["predicted"], c["truth"]) for c in counts])
    pooled = {key: sum(c[key] for c in counts) for key in ("intersection", "predicted", "truth")}
    return pd.DataFrame(
        {
            "cutoff": cutoffs,
            "threshold": np.round(cutoffs / PROBABILITY_SCALE, 4),
            "mean_dice": per_slide.mean(axis=0),
            "global_dice": dice(pooled["intersection"], pooled["predicted"], pooled["truth"]),
        },
        columns=SWEEP_COLUMNS,
    )


def best_threshold(sweep: pd.DataFrame, column: str, prefer: float) -> float:
    """Return the sweep's threshold with the highest ``column``.

    Among ties, the one nearest ``prefer`` (then the lower).
    """
    best = sweep[sweep[column] == sweep[column].max()]
    distance = (best["threshold"] - prefer).abs()
    return float(best.loc[distance == distance.min(), "threshold"].min())


def evaluation_threshold(sweep: pd.DataFrame, mode: str, configured: float) -> float:
    """Return the threshold to evaluate at.

    ``configured`` when ``mode`` is "fixed"; when "tuned", the sweep's
    best for mean Dice (ties: nearest ``configured``). Raises InputError
    for another mode.
    """
    if mode not in THRESHOLD_MODES:
        raise InputError(None, f"eval.threshold must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    return configured if mode == "fixed" else best_threshold(sweep, "mean_dice", configured)


def slide_dice(histograms: Mapping[str, ValueHistogram], folds: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Return the Dice of each slide of ``histograms`` at ``threshold`` and at its own best threshold.

    ``folds``: :func:`tilepipe.data.folds.read_folds` table; every slide must
    be in it (ValueError otherwise). Columns: :data:`SLIDE_COLUMNS`
    (pixel counts at ``threshold``; ``best_threshold`` ties go to the one
    nearest ``threshold``), sorted by fold, then slide.
    """
    fold_of = folds.set_index("slide")["fold"]
    missing = sorted(set(histograms) - set(fold_of.index))
    if missing:
        raise ValueError(f"slide(s) {', '.join(missing)} have no fold")
    cutoff = foreground_cutoff(threshold)
    rows = []
    for slide, histogram in histograms.items():
        counts = {key: int(value[0]) for key, value in histogram.counts([cutoff]).items()}
        sweep = threshold_sweep({slide: histogram})
        best = best_threshold(sweep, "mean_dice", threshold)
        rows.append(
            {
                "slide": slide,
                "fold": int(fold_of[slide]),
                "threshold": threshold,
                "dice": float(dice(counts["intersection"], counts["predicted"], counts["truth"])),
                "intersection": counts["intersection"],
                "predicted_pixels": counts["predicted"],
                "truth_pixels": counts["truth"],
                "best_threshold": best,
                "best_dice": float(sweep.loc[sweep["threshold"] == best, "mean_dice"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=SLIDE_COLUMNS).sort_values(["fold", "slide"], ignore_index=True)


def rle_dice_counts(predicted: rle.Runs, truth: rle.Runs) -> dict[str, int]:
    """Return the ``intersection``, ``predicted`` and ``truth`` pixel counts of two masks given as runs.

    Exact and without decoding: the intersection is the length covered by
    both run lists (each sorted and disjoint, as :func:`tilepipe.io.rle.parse`
    guarantees). The shapes must match (ValueError).
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} and {truth.shape}")
    starts = np.concatenate([predicted.starts, truth.starts])
    ends = starts + np.concatenate([predicted.lengths, truth.lengths])
    positions = np.concatenate([starts, ends])
    order = np.argsort(positions, kind="stable")
    steps = np.concatenate([np.ones(starts.size, np.int64), -np.ones(ends.size, np.int64)])[order]
    positions = positions[order]
    # Between consecutive event positions the coverage is constant: 2 means both masks.
    covered_by_both = np.cumsum(steps)[:-1] == 2
    return {
        "intersection": int(np.diff(positions)[covered_by_both].sum()),
        "predicted": int(predicted.lengths.sum()),
        "truth": int(truth.lengths.sum()),
    }


def submission_dice(
    submission_csv: str | os.PathLike, truth_csv: str | os.PathLike, shapes: Mapping[str, tuple[int, int]]
) -> pd.DataFrame:
    """Return the Dice of each image of the truth CSV against the submission (both ``id,predicted`` RLE).

    ``shapes``: ``(height, width)`` of each image. Columns:
    :data:`SUBMISSION_COLUMNS`, in the truth's order. Raises InputError
    naming the submission when an id of the truth is missing from it, and
    naming the file of a malformed RLE; KeyError for an id without a shape.
    """
    submission = read_rles(submission_csv)
    truth = read_rles(truth_csv)
    rows = []
    for slide, truth_rle in truth.items():
        if slide not in submission:
            raise InputError(submission_csv, f"id {slide} of {Path(truth_csv).name} has no row")
        counts = rle_dice_counts(
            rle.parse(submission[slide], shapes[slide], f"{submission_csv} (id {slide})"),
            rle.parse(truth_rle, shapes[slide], f"{truth_csv} (id {slide})"),
        )
        rows.append(
            {
                "id": slide,
                "dice": float(dice(counts["intersection"], counts["predicted"], counts["truth"])),
                "intersection": counts["intersection"],
                "predicted_pixels": counts["predicted"],
                "truth_pixels": counts["truth"],
            }
        )
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)


def read_truth_rows(truth_csv: str | os.PathLike, slide: str, shape: tuple[int, int]) -> RunsRows:
    """Return the mask of ``slide`` in the ``id,predicted`` CSV ``truth_csv`` as :class:`RunsRows` of ``shape``.

    Raises InputError naming the CSV when it has no row for ``slide``.
    """
    rles = read_rles(truth_csv)
    if slide not in rles:
        raise InputError(truth_csv, f"no row for id {slide}")
    return RunsRows(rle.parse(rles[slide], shape, f"{truth_csv} (id {slide})"))


def read_rles(path: str | os.PathLike) -> dict[str, str]:
    """Return id -> RLE string of the ``id,predicted`` CSV ``path``, in file order (InputError when unusable)."""
    frame = read_id_csv(path, ("id", "predicted"), "id,predicted CSV")
    return dict(zip(frame["id"], frame["predicted"], strict=False))


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` without its index to the CSV ``path``, atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)
