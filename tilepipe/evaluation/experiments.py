"""Experiments side by side: out-of-fold Dice, object F1, size and time of each, as one table and one bar plot.

Torch-free: the parameter counts come from the caller (the workflow script
counts them in a checkpoint); times come from Snakemake's benchmark files
(tab-separated, seconds in column ``s``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tilepipe.evaluation.plots import _save
from tilepipe.evaluation.summary import pooled_scores

__all__ = ["EXPERIMENT_COLUMNS", "benchmark_seconds", "compare_experiments", "plot_experiments"]

EXPERIMENT_COLUMNS = [
    "experiment",
    "architecture",
    "encoder",
    "ensemble_weight",
    "slides",
    "mean_dice",
    "global_dice",
    "object_f1",
    "parameters",
    "train_seconds",
    "predict_seconds",
]


def benchmark_seconds(paths: Sequence[str | os.PathLike]) -> float:
    """Return the wall-clock seconds summed over the Snakemake benchmark files ``paths`` (column ``s``), to 0.01 s.

    NaN when any file is missing (a job not run by Snakemake, e.g. imported
    models) or ``paths`` is empty.
    """
    if not paths or not all(Path(p).is_file() for p in paths):
        return float("nan")
    return round(float(sum(pd.read_csv(p, sep="\t")["s"].sum() for p in paths)), 2)


def compare_experiments(
    dice_tables: Mapping[str, pd.DataFrame],
    models: Mapping[str, dict],
    parameters: Mapping[str, int],
    train_seconds: Mapping[str, float],
    predict_seconds: Mapping[str, float],
    ensemble: Mapping[str, float],
) -> pd.DataFrame:
    """Return one row per experiment (in ``dice_tables`` order), columns :data:`EXPERIMENT_COLUMNS`.

    ``dice_tables``: each experiment's out-of-fold Dice table of one stage
    (:func:`tilepipe.evaluation.dice.slide_dice` columns, plus the object
    counts of :func:`tilepipe.evaluation.gate.configured_objects` when the
    stage's eval has them). ``mean_dice`` is the mean of per-slide Dice,
    ``global_dice`` the Dice of all slides' pixels pooled, ``object_f1``
    from the pooled object counts (NaN without them). ``models``: each
    experiment's ``model`` settings (architecture, encoder);
    ``parameters``: its network's parameter count; ``train_seconds``: its
    training jobs' wall time, all stages and folds; ``predict_seconds``:
    its out-of-fold predictions' wall time; ``ensemble``: the members'
    weights (0 for an experiment outside the ensemble).
    """
    rows = []
    for name, table in dice_tables.items():
        scores = pooled_scores(table)
        rows.append(
            {
                "experiment": name,
                "architecture": models[name]["architecture"],
                "encoder": models[name]["encoder"],
                "ensemble_weight": float(ensemble.get(name, 0.0)),
                "slides": len(table),
                "mean_dice": scores["mean_dice"],
                "global_dice": scores["global_dice"],
                "object_f1": scores.get("object_f1", float("nan")),
                "parameters": int(parameters[name]),
                "train_seconds": float(train_seconds[name]),
                "predict_seconds": float(predict_seconds[name]),
            }
        )
    return pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)


def plot_experiments(table: pd.DataFrame, out_png: str | os.PathLike, title: str) -> None:
    """Bar plot of a :func:`compare_experiments` table: mean Dice, global Dice and object F1 per experiment.

    Each experiment's label gives its network, parameter count (millions)
    and training time (minutes).
    """
    figure = Figure(figsize=(max(5.0, 1.6 * len(table) + 2), 4.5), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(table))
    width = 0.27
    for offset, column in zip((-width, 0.0, width), ("mean_dice", "global_dice", "object_f1"), strict=True):
        axis.bar(positions + offset, table[column].fillna(0.0), width, label=column.replace("_", " "))
    labels = [
        f"{row.experiment}\n{row.architecture}\n{row.encoder}\n"
        f"{row.parameters / 1e6:.2f} M params, {row.train_seconds / 60:.1f} min"
        for row in table.itertuples()
    ]
    axis.set_xticks(positions, labels, fontsize="small")
    axis.set_ylim(0, 1)
    axis.set_ylabel("out-of-fold score")
    axis.legend(loc="lower right", fontsize="small")
    axis.set_title(title)
    _save(figure, out_png)
