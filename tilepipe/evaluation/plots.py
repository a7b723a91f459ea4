"""PNG figures of a run: training curves, Dice per slide, the threshold and gate sweeps, and slide overlays.

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas (no
pyplot state, no display) and written atomically. Slide overlays are
thumbnails: the slide's coarsest pyramid level with the truth outlined in
one colour and the predicted mask in another; the full-resolution masks
are read in row bands and strided down to the thumbnail's grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import cv2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tilepipe.atomic import atomic_output
from tilepipe.stores.slide import SlideStore

__all__ = [
    "PREDICTION_RGB",
    "TRUTH_RGB",
    "plot_gate_sweep",
    "plot_overlay",
    "plot_slide_dice",
    "plot_threshold_sweep",
    "plot_training_curves",
    "strided_mask",
]

TRUTH_RGB = (0, 200, 0)
PREDICTION_RGB = (0, 90, 255)
DPI = 100
MIN_OVERLAY_WIDTH = 600  # px: small thumbnails are shown enlarged by a whole factor
TITLE_PIXELS = 40  # px above an overlay for its title
BAND_PIXELS = 16 << 20  # full-resolution pixels read per band when striding a mask down


def _save(figure: Figure, out_png: str | os.PathLike) -> None:
    """Write ``figure`` as the PNG ``out_png`` through the Agg canvas, atomically."""
    FigureCanvasAgg(figure)
    with atomic_output(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def plot_training_curves(metrics: Mapping[int, pd.DataFrame], out_png: str | os.PathLike, title: str) -> None:
    """Plot one panel per fold: train and validation loss (left axis, log scale when all positive) and
    validation Dice (right axis) per epoch.

    ``metrics``: fold -> its ``metrics.csv`` table (columns ``epoch``,
    ``train_loss``, ``val_loss``, ``val_dice`` at least).
    """
    folds = sorted(metrics)
    figure = Figure(figsize=(4.2 * len(folds), 3.6), layout="constrained")
    panels = figure.subplots(1, len(folds), squeeze=False)[0]
    for panel, fold in zip(panels, folds, strict=False):
        table = metrics[fold]
        panel.plot(table["epoch"], table["train_loss"], marker="o", color="tab:blue", label="train loss")
        panel.plot(table["epoch"], table["val_loss"], marker="o", color="tab:orange", label="val loss")
        losses = table[["train_loss", "val_loss"]].to_numpy()
        if (losses > 0).all():  # losses span orders of magnitude early in training
            panel.set_yscale("log")
        panel.set_xlabel("epoch")
        panel.set_ylabel("loss")
        panel.set_title(f"fold {fold}")
        dice_axis = panel.twinx()
        dice_axis.plot(table["epoch"], table["val_dice"], marker="s", color="tab:green", label="val Dice")
        dice_axis.set_ylim(0, 1)
        dice_axis.set_ylabel("val Dice")
        lines = panel.get_lines() + dice_axis.get_lines()
        panel.legend(lines, [line.get_label() for line in lines], loc="best", fontsize="small")
    figure.suptitle(title)
    _save(figure, out_png)


def plot_slide_dice(table: pd.DataFrame, out_png: str | os.PathLike, title: str) -> None:
    """Bar chart of each slide's Dice at the evaluation threshold, coloured by fold, with its best Dice marked.

    ``table``: a :func:`tilepipe.evaluation.dice.slide_dice` table.
    """
    figure = Figure(figsize=(max(5.0, 0.6 * len(table) + 2), 4.0), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(table))
    axis.bar(positions, table["dice"], color=[_fold_colour(fold) for fold in table["fold"]])
    axis.scatter(positions, table["best_dice"], marker="_", s=200, color="black", zorder=3, label="best threshold")
    mean = float(table["dice"].mean())
    axis.axhline(mean, color="grey", linestyle="--", label=f"mean {mean:.3f}")
    axis.set_xticks(positions, table["slide"], rotation=60, ha="right", fontsize="small")
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"Dice at threshold {float(table['threshold'].iloc[0]):g}")
    folds = sorted({int(f) for f in table["fold"]})
    handles = [Patch(color=_fold_colour(fold), label=f"fold {fold}") for fold in folds]
    axis.legend(handles=handles + axis.get_legend_handles_labels()[0], loc="lower right", fontsize="small")
    axis.set_title(title)
    _save(figure, out_png)


def _fold_colour(fold: int) -> str:
    return f"C{int(fold) % 10}"


def plot_threshold_sweep(
    sweeps: Mapping[str, pd.DataFrame], thresholds: Mapping[str, float], out_png: str | os.PathLike
) -> None:
    """Plot mean and global Dice against the threshold, one colour per stage.

    Dots mark each curve's maximum, a dotted line the stage's evaluation
    threshold. ``sweeps``: stage -> :func:`tilepipe.evaluation.dice.threshold_sweep` table;
    ``thresholds``: stage -> its evaluation threshold.
    """
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    for i, (stage, sweep) in enumerate(sweeps.items()):
        colour = f"C{i}"
        axis.plot(sweep["threshold"], sweep["mean_dice"], color=colour, label=f"{stage} mean Dice")
        axis.plot(sweep["threshold"], sweep["global_dice"], color=colour, linestyle="--", label=f"{stage} global Dice")
        for column in ("mean_dice", "global_dice"):
            best = sweep.loc[sweep[column].idxmax()]
            axis.plot(best["threshold"], best[column], marker="o", color=colour)
        axis.axvline(thresholds[stage], color=colour, linestyle=":")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("threshold (probability)")
    axis.set_ylabel("out-of-fold Dice")
    axis.legend(loc="lower center", fontsize="small")
    axis.set_title("Threshold sweep")
    _save(figure, out_png)


def plot_gate_sweep(sweeps: Mapping[str, pd.DataFrame], out_png: str | os.PathLike) -> None:
    """Plot what the classification gate costs and saves, one colour per stage, in two panels.

    Left: out-of-fold mean Dice (solid) and object recall (dashed) against
    the gate threshold, the gate off as a dotted horizontal line of the
    stage's colour and the configured gate as a dotted vertical one. Right:
    pixel recall lost against the share of tissue windows skipped (decoder
    runs avoided), one point per gate threshold, the configured one ringed.
    ``sweeps``: stage -> :func:`tilepipe.evaluation.gate.gate_sweep` table;
    a stage whose windows carry no classification scores is named in the
    figure instead of drawn.
    """
    figure = Figure(figsize=(11.0, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    unswept = []
    for i, (stage, sweep) in enumerate(sweeps.items()):
        colour = f"C{i}"
        if not sweep["scored_windows"].any():
            unswept.append(stage)
            continue
        gated = sweep[sweep["gate"].notna()].sort_values("gate")
        off = sweep[sweep["gate"].isna()]
        left.plot(gated["gate"], gated["mean_dice"], color=colour, marker=".", label=f"{stage} mean Dice")
        left.plot(gated["gate"], gated["object_recall"], color=colour, linestyle="--", label=f"{stage} object recall")
        if not off.empty:
            left.axhline(float(off["mean_dice"].iloc[0]), color=colour, linestyle=":", linewidth=1)
        configured = sweep[sweep["configured"].astype(bool) & sweep["gate"].notna()]
        right.plot(gated["skipped_share"], gated["pixel_recall_lost"], color=colour, marker="o", label=stage)
        for row in configured.itertuples():
            left.axvline(row.gate, color=colour, linestyle=":")
            right.plot(
                row.skipped_share, row.pixel_recall_lost, marker="o", markersize=12, fillstyle="none", color=colour
            )
            right.annotate(f"gate {row.gate:g}", (row.skipped_share, row.pixel_recall_lost), fontsize="small")
    left.set_xlim(0, 1)
    left.set_xlabel("gate threshold (classification probability)")
    left.set_ylabel("out-of-fold score")
    right.set_xlim(0, 1)
    right.set_ylim(bottom=0)
    right.set_xlabel("tissue windows skipped (decoder runs avoided)")
    right.set_ylabel("pixel recall lost")
    for axis in (left, right):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize="small")
    if unswept:
        left.text(0.5, 0.5, f"no classification scores: {', '.join(unswept)}", ha="center", transform=left.transAxes)
    figure.suptitle("Classification gate sweep (dotted: gate off / configured gate)")
    _save(figure, out_png)


def strided_mask(array, step: int, cutoff: int = 1) -> np.ndarray:
    """Return ``array[::step, ::step] >= cutoff`` as ``(ceil(h / step), ceil(w / step))`` uint8 0/1.

    ``array``: ``(y, x)`` read by row bands ``array[y0:y1]`` (zarr, numpy,
    :class:`tilepipe.evaluation.dice.RunsRows`), about :data:`BAND_PIXELS` pixels
    at a time.
    """
    height, width = array.shape
    band_rows = max(1, BAND_PIXELS // max(1, width) // step) * step
    out = np.empty((-(-height // step), -(-width // step)), dtype=np.uint8)
    for y0 in range(0, height, band_rows):
        band = np.asarray(array[y0 : y0 + band_rows])[::step, ::step]
        out[y0 // step : y0 // step + band.shape[0]] = band >= cutoff
    return out


def plot_overlay(
    store_path: str | os.PathLike,
    probability,
    cutoff: int,
    out_png: str | os.PathLike,
    title: str,
    truth=None,
) -> None:
    """Draw the slide's coarsest pyramid level with the outlines of the prediction and of the truth.

    ``probability``: the ``(y, x)`` uint8 probability at level 0 (a zarr
    array); the prediction is ``probability >= cutoff``. ``truth``:
    ``(y, x)`` non-zero = foreground, row-band readable like
    ``probability``, or None (prediction only).
    """
    store = SlideStore(store_path)
    level = len(store.levels) - 1
    step = 2**level
    thumbnail = np.ascontiguousarray(store.levels[level][:].transpose(1, 2, 0))
    thickness = max(1, round(max(thumbnail.shape[:2]) / 800))
    legend = []
    outlines = [(probability, cutoff, PREDICTION_RGB, "prediction")]
    if truth is not None:
        outlines.insert(0, (truth, 1, TRUTH_RGB, "truth"))
    for mask, mask_cutoff, colour, label in outlines:
        small = strided_mask(mask, step, mask_cutoff)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(thumbnail, contours, -1, colour, thickness)
        legend.append(Patch(color=np.asarray(colour) / 255, label=label))
    # Shown at a whole multiple of its own pixels, so that no outline pixel is resampled away.
    scale = -(-MIN_OVERLAY_WIDTH // thumbnail.shape[1])
    height, width = thumbnail.shape[0] * scale, thumbnail.shape[1] * scale
    figure = Figure(figsize=(width / DPI, (height + TITLE_PIXELS) / DPI))
    axis = figure.add_axes((0, 0, 1, height / (height + TITLE_PIXELS)))
    axis.imshow(thumbnail, interpolation="nearest")
    axis.set_axis_off()
    axis.legend(handles=legend, loc="upper right", fontsize="small")
    figure.suptitle(title, y=1 - TITLE_PIXELS / 2 / (height + TITLE_PIXELS), va="center")
    _save(figure, out_png)
