"""The evaluation summary of a run: one row per stage and scope (out-of-fold, best thresholds, submission)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from tilepipe.evaluation.dice import best_threshold, dice

__all__ = ["SUMMARY_COLUMNS", "summarize"]


SUMMARY_COLUMNS = ["stage", "scope", "fold", "slides", "threshold", "mean_dice", "global_dice"]


def summarize(
    slide_tables: Mapping[str, pd.DataFrame],
    sweeps: Mapping[str, pd.DataFrame],
    submission: pd.DataFrame | None = None,
    submission_stage: str | None = None,
    submission_threshold: float | None = None,
) -> pd.DataFrame:
    """Return the evaluation summary, one row per stage and scope.

    ``slide_tables`` and ``sweeps``: stage -> :func:`tilepipe.evaluation.dice.slide_dice` and
    :func:`tilepipe.evaluation.dice.threshold_sweep` tables. Per stage, scope ``oof`` gives the
    mean and global Dice at the evaluation threshold over all slides
    (fold "all") and per fold; ``oof_best_mean`` and ``oof_best_global``
    the sweep's best threshold for each kind of Dice (ties: nearest the
    evaluation threshold) with both Dice there. ``submission`` (a
    :func:`tilepipe.evaluation.dice.submission_dice` table) adds a ``submission`` row for
    ``submission_stage`` at ``submission_threshold``. Columns:
    :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for stage, table in slide_tables.items():
        threshold = float(table["threshold"].iloc[0])
        rows.append(_summary_row(stage, "oof", "all", table, threshold))
        for fold, fold_table in table.groupby("fold", sort=True):
            rows.append(_summary_row(stage, "oof", str(fold), fold_table, threshold))
        sweep = sweeps[stage]
        for scope, column in (("oof_best_mean", "mean_dice"), ("oof_best_global", "global_dice")):
            best = sweep.loc[sweep["threshold"] == best_threshold(sweep, column, threshold)].iloc[0]
            rows.append(
                {
                    "stage": stage,
                    "scope": scope,
                    "fold": "all",
                    "slides": len(table),
                    "threshold": float(best["threshold"]),
                    "mean_dice": float(best["mean_dice"]),
                    "global_dice": float(best["global_dice"]),
                }
            )
    if submission is not None:
        rows.append(_summary_row(submission_stage, "submission", "all", submission, submission_threshold))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _summary_row(stage: str, scope: str, fold: str, table: pd.DataFrame, threshold: float) -> dict:
    """Mean of the table's per-image Dice and the Dice of its pooled pixel counts."""
    pooled = dice(table["intersection"].sum(), table["predicted_pixels"].sum(), table["truth_pixels"].sum())
    return {
        "stage": stage,
        "scope": scope,
        "fold": fold,
        "slides": len(table),
        "threshold": threshold,
        "mean_dice": float(table["dice"].mean()),
        "global_dice": float(pooled),
    }
