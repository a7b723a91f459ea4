"""The evaluation summary with objects and the gate: slides -> tables -> one row per stage and scope."""

import numpy as np
import pandas as pd
import pytest

from tests.builders import write_slide_store
from tests.evaluation.test_gate import slide_case, write_windows
from tilepipe.evaluation.dice import slide_dice, threshold_sweep
from tilepipe.evaluation.gate import configured_objects, evaluate_slide, gate_sweep
from tilepipe.evaluation.objects import match_objects
from tilepipe.evaluation.summary import SUMMARY_COLUMNS, summarize
from tilepipe.stores.probability import write_probability


@pytest.fixture
def stage(tmp_path):
    """Three evaluated out-of-fold slides of one stage, gated at 0.5: (histograms, gate tables, folds, cases)."""
    histograms, gates, cases = {}, [], {}
    for seed, slide in enumerate(["a", "b", "c"]):
        probability, truth, windows = slide_case(shape=(64, 80), keep=16, seed=seed + 10)
        write_slide_store(
            tmp_path / f"{slide}.zarr", np.zeros((3, 64, 80), np.uint8), truth, chunk=16, min_level_size=16
        )
        prediction = tmp_path / "predictions" / f"{slide}.zarr"
        write_probability(prediction, probability, chunk=16)
        windows_csv = write_windows(tmp_path / f"{slide}.windows.csv", windows)
        histograms[slide], table = evaluate_slide(
            prediction, tmp_path / f"{slide}.zarr", windows_csv, threshold=0.5, clf_threshold=0.5
        )
        gates.append(table)
        cases[slide] = (probability, truth, windows)
    folds = pd.DataFrame({"slide": ["a", "b", "c"], "patient": ["1", "2", "3"], "fold": [0, 0, 1]})
    return histograms, pd.concat(gates, ignore_index=True), folds, cases


def test_summary_rows_agree_with_the_slides(stage):
    histograms, gates, folds, cases = stage
    table = slide_dice(histograms, folds, 0.5).merge(configured_objects(gates), on="slide", validate="one_to_one")
    sweep = gate_sweep(gates)
    submission = pd.DataFrame(
        {
            "id": ["t"],
            "dice": [0.8],
            "intersection": [4],
            "predicted_pixels": [5],
            "truth_pixels": [5],
            "predicted_objects": [3],
            "truth_objects": [2],
            "matched_objects": [2],
        }
    )
    summary = summarize(
        {"stage1": table},
        {"stage1": threshold_sweep(histograms)},
        submission,
        "stage1",
        0.5,
        gate_sweeps={"stage1": sweep},
        submission_gate=0.5,
    )
    assert list(summary.columns) == SUMMARY_COLUMNS
    rows = summary.set_index(["scope", "fold"])
    oof, no_gate = rows.loc[("oof", "all")], rows.loc[("oof_no_gate", "all")]
    configured = sweep[sweep["configured"]].iloc[0]
    # The histograms gated as configured give the Dice the gate sweep gives at the configured gate.
    assert oof["mean_dice"] == pytest.approx(configured["mean_dice"])
    assert oof["global_dice"] == pytest.approx(configured["global_dice"])
    assert (oof["gate"], oof["skipped_share"]) == (0.5, configured["skipped_share"])
    assert oof["skipped_share"] > 0 and oof["pixel_recall_lost"] > 0, "the gate skipped windows with glomeruli"
    # Objects pooled over the slides, each slide's objects those of its gated mask.
    matched = 0
    for probability, truth, windows in cases.values():
        gated = probability.copy()
        for row in windows[windows["clf"] < 0.5].itertuples():
            gated[row.centre_y : row.centre_y + row.centre_height, row.centre_x : row.centre_x + row.centre_width] = 0
        matched += match_objects(gated, truth, cutoff=128).counts()["matched_objects"]
    assert oof["matched_objects"] == matched
    assert oof["object_recall"] == pytest.approx(matched / oof["truth_objects"])
    assert rows.loc[("oof", "1"), "matched_objects"] == table.set_index("slide").loc["c", "matched_objects"]
    assert np.isnan(no_gate["gate"]) and no_gate["skipped_share"] == 0 and no_gate["pixel_recall_lost"] == 0
    assert no_gate["mean_dice"] != oof["mean_dice"]
    assert no_gate["matched_objects"] >= oof["matched_objects"]
    submission_row = rows.loc[("submission", "all")]
    assert submission_row["object_precision"] == pytest.approx(2 / 3) and submission_row["gate"] == 0.5
    assert submission_row["count_error"] == 1


def test_summary_without_objects_or_gate_keeps_its_rows():
    table = pd.DataFrame(
        {
            "slide": ["a"],
            "fold": [0],
            "threshold": 0.5,
            "dice": [0.5],
            "intersection": [5],
            "predicted_pixels": [10],
            "truth_pixels": [10],
        }
    )
    sweep = pd.DataFrame({"cutoff": [128], "threshold": [0.502], "mean_dice": [0.5], "global_dice": [0.5]})
    summary = summarize({"stage1": table}, {"stage1": sweep})
    assert list(summary["scope"]) == ["oof", "oof", "oof_best_mean", "oof_best_global"]
    assert summary["object_f1"].isna().all() and summary["gate"].isna().all()
