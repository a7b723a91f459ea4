"""Experiments side by side: pooled scores per experiment, times from benchmark files, the bar plot."""

import math

import pandas as pd
import pytest

from tilepipe.evaluation.experiments import (
    EXPERIMENT_COLUMNS,
    benchmark_seconds,
    compare_experiments,
    plot_experiments,
)


def dice_table(rows, objects=True):
    """A per-slide Dice table: rows of (dice, intersection, predicted, truth[, predicted, truth, matched objects])."""
    columns = ["dice", "intersection", "predicted_pixels", "truth_pixels"]
    if objects:
        columns += ["predicted_objects", "truth_objects", "matched_objects"]
    return pd.DataFrame([r[: len(columns)] for r in rows], columns=columns).assign(slide=lambda t: t.index.astype(str))


def benchmark(path, seconds):
    path.write_text("s\th:m:s\tmax_rss\n" + f"{seconds}\t0:00:01\t10\n")
    return path


def test_each_experiment_gets_one_row_of_pooled_scores_size_and_time(tmp_path):
    tables = {
        "main": dice_table([(1.0, 10, 10, 10, 2, 2, 2), (0.0, 0, 30, 10, 1, 3, 0)]),
        "unetpp": dice_table([(0.5, 5, 10, 10), (0.5, 5, 10, 10)], objects=False),
    }
    table = compare_experiments(
        tables,
        models={
            "main": {"architecture": "unet_1st_place", "encoder": "resnet18"},
            "unetpp": {"architecture": "UnetPlusPlus", "encoder": "timm/regnety_002"},
        },
        parameters={"main": 1_000, "unetpp": 2_000},
        train_seconds={"main": 60.0, "unetpp": float("nan")},
        predict_seconds={"main": 5.0, "unetpp": 6.0},
        ensemble={"unetpp": 1.0},
    )
    assert list(table.columns) == EXPERIMENT_COLUMNS
    main, unetpp = table.to_dict("records")
    assert main["experiment"] == "main" and main["slides"] == 2
    assert main["mean_dice"] == 0.5
    assert main["global_dice"] == pytest.approx(2 * 10 / (40 + 20)), "pixels pooled over slides"
    assert main["object_f1"] == pytest.approx(2 * 2 / (3 + 5)), "object counts pooled over slides"
    assert main["ensemble_weight"] == 0.0 and unetpp["ensemble_weight"] == 1.0
    assert math.isnan(unetpp["object_f1"]), "no object columns: no F1"
    assert (unetpp["architecture"], unetpp["encoder"], unetpp["parameters"]) == (
        "UnetPlusPlus",
        "timm/regnety_002",
        2000,
    )
    assert main["train_seconds"] == 60.0 and math.isnan(unetpp["train_seconds"])
    out = tmp_path / "experiments.png"
    plot_experiments(table, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_seconds_sum_the_files_and_are_nan_when_one_is_missing(tmp_path):
    files = [benchmark(tmp_path / "a.tsv", 1.5), benchmark(tmp_path / "b.tsv", 2.25)]
    assert benchmark_seconds(files) == 3.75
    assert math.isnan(benchmark_seconds([*files, tmp_path / "missing.tsv"]))
    assert math.isnan(benchmark_seconds([]))
    # Sums of Snakemake's 4-decimal seconds are rounded, not 64.11999999999999 in a spreadsheet.
    tenths = [benchmark(tmp_path / f"t{i}.tsv", 0.1) for i in range(3)]
    assert repr(benchmark_seconds(tenths)) == "0.3"
