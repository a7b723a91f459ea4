"""The evaluation summary of a run: one row per stage and scope (out-of-fold, best thresholds, no gate, submission)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tilepipe.evaluation.dice import best_threshold, dice
from tilepipe.evaluation.objects import COUNT_COLUMNS, OBJECT_COLUMNS, object_scores

__all__ = ["SUMMARY_COLUMNS", "pooled_scores", "summarize"]


SUMMARY_COLUMNS = [
    "stage",
    "scope",
    "fold",
    "slides",
    "threshold",
    "gate",
    "mean_dice",
    "global_dice",
    *OBJECT_COLUMNS,
    "skipped_share",
    "pixel_recall_lost",
]


def summarize(
    slide_tables: Mapping[str, pd.DataFrame],
    sweeps: Mapping[str, pd.DataFrame],
    submission: pd.DataFrame | None = None,
    submission_stage: str | None = None,
    submission_threshold: float | None = None,
    gate_sweeps: Mapping[str, pd.DataFrame] | None = None,
    submission_gate: float | None = None,
) -> pd.DataFrame:
    """Return the evaluation summary, one row per stage and scope.

    ``slide_tables`` and ``sweeps``: stage -> :func:`tilepipe.evaluation.dice.slide_dice` and
    :func:`tilepipe.evaluation.dice.threshold_sweep` tables. Per stage, scope ``oof`` gives the
    mean and global Dice at the evaluation threshold over all slides
    (fold "all") and per fold, and the object scores pooled over those
    slides when the table has the object counts
    (:data:`tilepipe.evaluation.objects.COUNT_COLUMNS`, NaN otherwise);
    ``oof_best_mean`` and ``oof_best_global`` the sweep's best threshold
    for each kind of Dice (ties: nearest the evaluation threshold) with
    both Dice there. ``gate_sweeps`` (stage -> :func:`tilepipe.evaluation.gate.gate_sweep`)
    adds the configured gate (``gate``, NaN = off), its ``skipped_share``
    and ``pixel_recall_lost`` to the ``oof`` row over all slides, and a
    row ``oof_no_gate``: the same slides with the gate off. ``submission``
    (a :func:`tilepipe.evaluation.dice.submission_dice` table, with object
    counts or without) adds a ``submission`` row for ``submission_stage``
    at ``submission_threshold`` and ``submission_gate``. Columns:
    :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for stage, table in slide_tables.items():
        threshold = float(table["threshold"].iloc[0])
        gates = None if gate_sweeps is None else gate_sweeps[stage]
        configured = None if gates is None else gates[gates["configured"].astype(bool)].iloc[0]
        oof = _summary_row(stage, "oof", "all", table, threshold)
        if configured is not None:
            oof.update({key: float(configured[key]) for key in ("gate", "skipped_share", "pixel_recall_lost")})
        rows.append(oof)
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
                    "gate": oof.get("gate", np.nan),
                    "mean_dice": float(best["mean_dice"]),
                    "global_dice": float(best["global_dice"]),
                }
            )
        if gates is not None:
            off = gates[gates["gate"].isna()].iloc[0]
            rows.append(
                {
                    "stage": stage,
                    "scope": "oof_no_gate",
                    "fold": "all",
                    **{key: off[key] for key in ("slides", "threshold", "gate", "mean_dice", "global_dice")},
                    **{key: off[key] for key in OBJECT_COLUMNS},
                    "skipped_share": off["skipped_share"],
                    "pixel_recall_lost": off["pixel_recall_lost"],
                }
            )
    if submission is not None:
        row = _summary_row(submission_stage, "submission", "all", submission, submission_threshold)
        rows.append({**row, "gate": np.nan if submission_gate is None else submission_gate})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def pooled_scores(table: pd.DataFrame) -> dict:
    """Scores of a per-image Dice table: ``mean_dice`` (mean of its Dice), ``global_dice`` (the Dice of its
    pooled pixel counts) and, where it has object counts, their sums and the pooled object scores."""
    pooled = dice(table["intersection"].sum(), table["predicted_pixels"].sum(), table["truth_pixels"].sum())
    scores = {"mean_dice": float(table["dice"].mean()), "global_dice": float(pooled)}
    if set(COUNT_COLUMNS) <= set(table.columns):
        counts = {column: int(table[column].sum()) for column in COUNT_COLUMNS}
        scores.update(counts)
        scores.update({key: float(value) for key, value in object_scores(*counts.values()).items()})
    return scores


def _summary_row(stage: str, scope: str, fold: str, table: pd.DataFrame, threshold: float) -> dict:
    """The summary row of a per-image Dice table (:func:`pooled_scores`) in ``stage``, ``scope`` and ``fold``."""
    return {
        "stage": stage,
        "scope": scope,
        "fold": fold,
        "slides": len(table),
        "threshold": threshold,
        **pooled_scores(table),
    }
