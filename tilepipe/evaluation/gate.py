"""The classification gate out of fold: what each gate threshold costs in Dice and recall, and saves in decoder runs.

Prediction (:mod:`tilepipe.inference.predict`) gates windows by the
ensemble's classification head: a window whose mean classification
probability ``clf`` is below ``inference.clf_threshold`` is set to 0
without running any decoder. Out-of-fold predictions are made without the
gate, and every prediction store has a per-window table beside it
(``results/predictions/{stage}/{slide}.windows.csv``, one row per window,
:data:`WINDOW_COLUMNS`):

- ``centre_y, centre_x, centre_height, centre_width``: the window's kept
  centre in level-0 pixels; the centres tile the slide;
- ``tissue``: tissue fraction (0..1) of the centre, empty when not measured;
- ``clf``: mean sigmoid of the classification heads over models x flips,
  empty when the window never reached the models (background) or the
  models have no classification head;
- ``segmented``: 1 when the decoder ran and the probability was written, else 0.

So any gate ``g`` can be replayed on an ungated store: a window with
``clf < g`` is *gated* and all pixels of its centre count as 0 (stored
value 0). Gate "off" (None) gates nothing, nor does ``g = 0``. One
streamed pass over a slide (:func:`slide_gates`) gives for each gate the
value histogram of the gated prediction (its Dice at any cutoff,
:mod:`tilepipe.evaluation.dice`), the true-positive pixels at the cutoff
that gating loses, the object match of the gated mask
(:mod:`tilepipe.evaluation.objects`) and window counts:

- ``tissue_windows``: windows that reached the models (``clf`` present or ``segmented``);
- ``scored_windows``: those with a ``clf`` (only these can be gated);
- ``skipped_windows``: those gated at ``g``: decoder runs avoided;
- ``unmeasured_windows``: windows that pass ``g`` but were not segmented
  in the store (a store predicted with a gate): their pixels read 0, so
  Dice and recall at ``g`` are lower bounds.

Time: a gated window still costs its read, resize, encoder passes and
classification head (models x flips); it saves only its decoder passes.
The prediction time saved is about ``skipped_share`` (skipped / tissue
windows) times the decoder's share of a tissue window's model time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tilepipe.errors import InputError
from tilepipe.evaluation.dice import VALUES, ValueHistogram, band_rows_for, dice, prediction_and_labels
from tilepipe.evaluation.objects import COUNT_COLUMNS, OBJECT_COLUMNS, ObjectMatch, ObjectMatcher, with_scores
from tilepipe.stores.probability import foreground_cutoff

__all__ = [
    "GATES",
    "GATE_COLUMNS",
    "SWEEP_COLUMNS",
    "WINDOW_COLUMNS",
    "GateOutcome",
    "configured_objects",
    "evaluate_slide",
    "gate_sweep",
    "gate_table",
    "read_windows",
    "slide_gates",
    "sweep_gates",
]

WINDOW_COLUMNS = ["centre_y", "centre_x", "centre_height", "centre_width", "tissue", "clf", "segmented"]
GATES: tuple[float | None, ...] = (None, *np.round(np.arange(0, 1, 0.05), 2).tolist())  # None = off
NO_TABLE = "no windows table: the gate is not applied and not swept"
NO_SCORES = "no classification scores (headless models?): the gate is not applied and not swept"
GATE_COLUMNS = [
    "slide",
    "gate",
    "configured",
    "threshold",
    "dice",
    "intersection",
    "predicted_pixels",
    "truth_pixels",
    "lost_pixels",
    *COUNT_COLUMNS,
    "tissue_windows",
    "scored_windows",
    "skipped_windows",
    "unmeasured_windows",
    "note",
]
SWEEP_COLUMNS = [
    "gate",
    "configured",
    "threshold",
    "slides",
    "mean_dice",
    "global_dice",
    "pixel_recall",
    "pixel_recall_lost",
    *OBJECT_COLUMNS,
    "tissue_windows",
    "scored_windows",
    "skipped_windows",
    "skipped_share",
    "unmeasured_windows",
    "note",
]


def read_windows(path: str | os.PathLike, shape: tuple[int, int]) -> pd.DataFrame:
    """Read the windows table ``path`` of a ``(height, width)`` slide (see the module docstring).

    Returns its :data:`WINDOW_COLUMNS` (``clf`` and ``tissue`` float64, NaN
    where empty; the others int64). Raises InputError naming ``path`` when
    a column is missing or not numeric, a centre lies outside the slide or
    is empty, the centres do not tile the slide (total area, repeated
    origins), ``clf`` or ``tissue`` leave 0..1, or ``segmented`` is not 0/1.
    """
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a windows table ({err})") from None
    missing = [column for column in WINDOW_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(path, f"windows table lacks column(s) {', '.join(missing)}")
    table = table[WINDOW_COLUMNS]
    try:
        table = table.astype(dict.fromkeys(WINDOW_COLUMNS, np.float64))
    except (TypeError, ValueError) as err:
        raise InputError(path, f"windows table has a non-numeric value ({err})") from None
    integers = ["centre_y", "centre_x", "centre_height", "centre_width", "segmented"]
    values = table[integers]
    if values.isna().any().any() or (values != values.round()).any().any():
        raise InputError(path, f"{', '.join(integers)} must be whole numbers in every row")
    table = table.astype(dict.fromkeys(integers, np.int64))
    height, width = shape
    y0, x0, h, w = (table[c].to_numpy() for c in integers[:4])
    if len(table) == 0 or (h < 1).any() or (w < 1).any() or (y0 < 0).any() or (x0 < 0).any():
        raise InputError(path, "windows table has no rows, or an empty centre or one with a negative origin")
    if (y0 + h > height).any() or (x0 + w > width).any():
        raise InputError(path, f"a centre lies outside the slide of {height} x {width} pixels")
    if int((h * w).sum()) != height * width or table.duplicated(["centre_y", "centre_x"]).any():
        raise InputError(path, f"the centres do not tile the slide of {height} x {width} pixels")
    for column in ("clf", "tissue"):
        present = table[column].dropna()
        if ((present < 0) | (present > 1)).any():
            raise InputError(path, f"{column} must lie in 0..1 or be empty")
    if not table["segmented"].isin([0, 1]).all():
        raise InputError(path, "segmented must be 0 or 1")
    return table


@dataclass(frozen=True, eq=False)
class GateOutcome:
    """One slide's prediction with windows gated at ``gate`` (None = off).

    ``histogram``: stored values of the gated prediction over all pixels
    and over the truth; ``lost_pixels``: true-positive pixels at the pass's
    cutoff inside gated windows; ``objects``: the gated mask's objects
    against the truth's; window counts as in the module docstring.
    """

    gate: float | None
    histogram: ValueHistogram
    lost_pixels: int
    objects: ObjectMatch
    tissue_windows: int
    scored_windows: int
    skipped_windows: int
    unmeasured_windows: int


def slide_gates(
    probability,
    truth,
    windows: pd.DataFrame | None,
    gates: Sequence[float | None],
    cutoff: int,
    *,
    band_rows: int | None = None,
) -> list[GateOutcome]:
    """Replay each of ``gates`` on one slide's ungated prediction in one pass; return one outcome per gate.

    ``probability``: ``(y, x)`` uint8 ``round(p * 255)``; ``truth``:
    ``(y, x)``, non-zero = foreground; both read by row bands of
    ``band_rows`` rows (default about 16 M pixels, whole chunks of
    ``probability``). ``windows``: a :func:`read_windows` table of the
    slide, or None (nothing can be gated). ``cutoff``: the stored value
    (0..256) from which a pixel is foreground, for ``lost_pixels`` and the
    objects. The prediction is labelled window by window
    (:class:`tilepipe.evaluation.objects.ObjectMatcher` with the windows
    as cells), so each gate's objects cost no second pass over the pixels.
    Memory: a band, two 256-bin histograms per scored window, and counts
    per fragment of an object.
    """
    if tuple(probability.shape) != tuple(truth.shape):
        raise ValueError(f"probability shape {tuple(probability.shape)} differs from truth shape {tuple(truth.shape)}")
    height = probability.shape[0]
    band_rows = band_rows or band_rows_for(probability)
    if windows is None:
        windows = pd.DataFrame({column: pd.Series(dtype=np.float64) for column in WINDOW_COLUMNS})
    y0, x0, h, w = (windows[c].to_numpy(np.int64) for c in ("centre_y", "centre_x", "centre_height", "centre_width"))
    cells = np.stack([y0, x0, y0 + h, x0 + w], axis=1) if len(windows) else None
    scored = np.flatnonzero(windows["clf"].notna().to_numpy())  # the windows a gate can skip
    clf = windows["clf"].to_numpy(np.float64)[scored]
    gated = np.stack([_gated(clf, gate) for gate in gates]) if gates else np.zeros((0, len(scored)), bool)
    window_pixels = np.zeros((len(scored), VALUES), np.int64)  # histograms of the scored windows
    window_truth = np.zeros((len(scored), VALUES), np.int64)
    pixels, true = np.zeros(VALUES, np.int64), np.zeros(VALUES, np.int64)
    matcher = ObjectMatcher(probability.shape, cells)
    for top in range(0, height, band_rows):
        values = np.asarray(probability[top : top + band_rows], dtype=np.uint8)
        truth_band = np.asarray(truth[top : top + band_rows]) != 0
        bottom = top + values.shape[0]
        pixels += np.bincount(values.ravel(), minlength=VALUES)
        true += np.bincount(values[truth_band], minlength=VALUES)
        for j in np.flatnonzero((y0[scored] < bottom) & (y0[scored] + h[scored] > top)):
            i = scored[j]
            rect = (slice(max(y0[i], top) - top, min(y0[i] + h[i], bottom) - top), slice(x0[i], x0[i] + w[i]))
            window_pixels[j] += np.bincount(values[rect].ravel(), minlength=VALUES)
            window_truth[j] += np.bincount(values[rect][truth_band[rect]], minlength=VALUES)
        matcher.add_band(truth_band, values >= cutoff)
    removed = []
    for row in gated:
        cleared = np.zeros(len(windows) if cells is not None else 1, bool)
        cleared[scored[row]] = True
        removed.append(cleared)
    matches = matcher.finish(removed) if removed else []
    tissue = int((windows["clf"].notna() | (windows["segmented"] == 1)).sum())
    unsegmented = windows["segmented"].to_numpy()[scored] == 0
    outcomes = []
    for gate, row, match in zip(gates, gated, matches, strict=True):
        lost_pixels, lost_truth = window_pixels[row].sum(axis=0), window_truth[row].sum(axis=0)
        gated_pixels, gated_truth = pixels - lost_pixels, true - lost_truth
        gated_pixels[0] += lost_pixels.sum()  # a gated window's pixels are 0
        gated_truth[0] += lost_truth.sum()
        outcomes.append(
            GateOutcome(
                gate=gate,
                histogram=ValueHistogram(pixels=gated_pixels, truth=gated_truth),
                lost_pixels=int(lost_truth[cutoff:].sum()),
                objects=match,
                tissue_windows=tissue,
                scored_windows=len(scored),
                skipped_windows=int(row.sum()),
                unmeasured_windows=int((~row & unsegmented).sum()),
            )
        )
    return outcomes


def _gated(clf: np.ndarray, gate: float | None) -> np.ndarray:
    """Return which windows (``clf``: their scores) the gate ``gate`` skips: ``clf < gate``; none when off."""
    if gate is None:
        return np.zeros(clf.shape, bool)
    if not 0 <= gate <= 1:
        raise InputError(None, f"gate threshold must be in [0, 1] or off, got {gate}")
    return clf < gate


def sweep_gates(configured: float | None, gates: Sequence[float | None] = GATES) -> list[float | None]:
    """Return ``gates`` (None = off first) with the ``configured`` gate added if missing, the numbers ascending."""
    numbers = sorted(
        {float(g) for g in gates if g is not None} | ({float(configured)} if configured is not None else set())
    )
    return [None, *numbers]


def gate_table(
    slide: str,
    outcomes: Sequence[GateOutcome],
    *,
    configured: float | None,
    threshold: float,
    note: str = "",
) -> pd.DataFrame:
    """Return one slide's gate sweep: a row per outcome, columns :data:`GATE_COLUMNS`.

    ``gate`` is NaN for off; ``configured`` marks the outcome of the
    ``configured`` gate (``inference.clf_threshold``); ``threshold`` is the
    mask threshold of ``dice``, the pixel counts, ``lost_pixels`` and the
    objects (the cutoff of the pass). ``note`` says why the gate could not
    be swept, if so.
    """
    cutoff = foreground_cutoff(threshold)
    rows = []
    for outcome in outcomes:
        counts = {key: int(value[0]) for key, value in outcome.histogram.counts([cutoff]).items()}
        rows.append(
            {
                "slide": slide,
                "gate": np.nan if outcome.gate is None else outcome.gate,
                "configured": outcome.gate == configured,
                "threshold": threshold,
                "dice": float(dice(counts["intersection"], counts["predicted"], counts["truth"])),
                "intersection": counts["intersection"],
                "predicted_pixels": counts["predicted"],
                "truth_pixels": counts["truth"],
                "lost_pixels": outcome.lost_pixels,
                **outcome.objects.counts(),
                "tissue_windows": outcome.tissue_windows,
                "scored_windows": outcome.scored_windows,
                "skipped_windows": outcome.skipped_windows,
                "unmeasured_windows": outcome.unmeasured_windows,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=GATE_COLUMNS)


def evaluate_slide(
    prediction_path: str | os.PathLike,
    store_path: str | os.PathLike,
    windows_path: str | os.PathLike | None,
    *,
    threshold: float,
    clf_threshold: float | None,
    gates: Sequence[float | None] = GATES,
) -> tuple[ValueHistogram, pd.DataFrame]:
    """Evaluate one out-of-fold prediction against the labels of its slide store, for every gate, in one pass.

    ``prediction_path``: an ungated probability store; ``windows_path``:
    its windows table (None or a missing file: no gate can be applied,
    said in the table's ``note``). Returns the value histogram of the
    prediction gated as configured (``clf_threshold``; None = off), as
    :func:`tilepipe.evaluation.dice.slide_histogram` returns for an
    ungated one, and the slide's :func:`gate_table` for ``gates`` plus the
    configured one, at mask ``threshold``. Raises InputError naming the
    store without labels, a prediction of another shape, or a bad table.
    """
    probability, labels = prediction_and_labels(prediction_path, store_path)
    windows, note = None, NO_TABLE
    if windows_path is not None and Path(windows_path).is_file():
        windows = read_windows(windows_path, probability.shape)
        note = "" if windows["clf"].notna().any() else NO_SCORES
    gates = sweep_gates(clf_threshold, gates)
    outcomes = slide_gates(probability, labels, windows, gates, foreground_cutoff(threshold))
    slide = Path(prediction_path).name.removesuffix(".zarr")
    table = gate_table(slide, outcomes, configured=clf_threshold, threshold=threshold, note=note)
    return outcomes[gates.index(clf_threshold)].histogram, table


def configured_objects(gate_tables: pd.DataFrame) -> pd.DataFrame:
    """Return each slide's objects gated as configured: ``slide``, ``object_threshold`` and :data:`OBJECT_COLUMNS`.

    ``gate_tables``: :func:`gate_table` tables of the slides, concatenated;
    each slide must have exactly one configured row (ValueError otherwise).
    """
    rows = gate_tables[gate_tables["configured"].astype(bool)]
    if rows["slide"].duplicated().any() or set(rows["slide"]) != set(gate_tables["slide"]):
        raise ValueError("every slide needs exactly one configured gate row")
    rows = rows.rename(columns={"threshold": "object_threshold"})
    return with_scores(rows[["slide", "object_threshold", *COUNT_COLUMNS]].reset_index(drop=True))


def gate_sweep(gate_tables: pd.DataFrame) -> pd.DataFrame:
    """Return one stage's gate sweep over its slides: a row per gate (off first), columns :data:`SWEEP_COLUMNS`.

    ``gate_tables``: the slides' :func:`gate_table` tables, concatenated.
    ``mean_dice`` is the mean of per-slide Dice, ``global_dice`` the Dice
    of all slides' pixels pooled; ``pixel_recall`` pooled true-positive
    pixels / truth pixels and ``pixel_recall_lost`` pooled ``lost_pixels``
    / truth pixels (the recall the gate costs); object scores from pooled
    counts; window counts summed, ``skipped_share`` skipped / tissue
    windows (NaN without tissue windows); ``note`` the slides' distinct notes.
    """
    if gate_tables.empty:
        raise ValueError("no slides to sweep")
    rows = []
    for gate, table in gate_tables.groupby(gate_tables["gate"].fillna(-1.0), sort=True):
        sums = table[["intersection", "predicted_pixels", "truth_pixels", "lost_pixels", *COUNT_COLUMNS]].sum()
        windows = table[["tissue_windows", "scored_windows", "skipped_windows", "unmeasured_windows"]].sum()
        truth_pixels = int(sums["truth_pixels"])
        notes = sorted({str(note) for note in table["note"].dropna() if str(note)})
        rows.append(
            {
                "gate": np.nan if gate < 0 else gate,
                "configured": bool(table["configured"].astype(bool).any()),
                "threshold": float(table["threshold"].iloc[0]),
                "slides": len(table),
                "mean_dice": float(table["dice"].mean()),
                "global_dice": float(dice(sums["intersection"], sums["predicted_pixels"], truth_pixels)),
                "pixel_recall": sums["intersection"] / truth_pixels if truth_pixels else np.nan,
                "pixel_recall_lost": sums["lost_pixels"] / truth_pixels if truth_pixels else np.nan,
                **{column: int(sums[column]) for column in COUNT_COLUMNS},
                **{column: int(windows[column]) for column in windows.index},
                "skipped_share": windows["skipped_windows"] / windows["tissue_windows"]
                if windows["tissue_windows"]
                else np.nan,
                "note": "; ".join(notes),
            }
        )
    return with_scores(pd.DataFrame(rows))[SWEEP_COLUMNS]
