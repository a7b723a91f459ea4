"""The classification gate replayed out of fold equals gating the prediction outright (tilepipe.evaluation.gate)."""

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.builders import write_slide_store
from tilepipe.errors import InputError
from tilepipe.evaluation.dice import slide_histogram, value_histogram
from tilepipe.evaluation.gate import (
    GATE_COLUMNS,
    GATES,
    NO_SCORES,
    NO_TABLE,
    SWEEP_COLUMNS,
    WINDOW_COLUMNS,
    configured_objects,
    evaluate_slide,
    gate_sweep,
    gate_table,
    read_windows,
    slide_gates,
    sweep_gates,
)
from tilepipe.evaluation.objects import match_objects
from tilepipe.stores.probability import write_probability


def windows_table(shape, keep, clf, segmented=None) -> pd.DataFrame:
    """The windows table of a slide cut into ``keep`` centres (row by row), as predict writes it.

    ``clf``: one score per centre (NaN = never reached the models);
    ``segmented`` defaults to 1 where ``clf`` is present.
    """
    height, width = shape
    rows = [
        (y, x, min(keep, height - y), min(keep, width - x))
        for y in range(0, height, keep)
        for x in range(0, width, keep)
    ]
    table = pd.DataFrame(rows, columns=WINDOW_COLUMNS[:4])
    clf = np.asarray(clf, dtype=np.float64)
    assert clf.shape == (len(table),)
    table["tissue"] = np.where(np.isnan(clf), 0.0, 0.5)
    table["clf"] = clf
    table["segmented"] = (~np.isnan(clf)).astype(int) if segmented is None else segmented
    return table


def gated_outright(probability, windows, gate) -> tuple[np.ndarray, np.ndarray]:
    """The prediction with every window of ``clf < gate`` set to 0, and where those windows are."""
    out, region = probability.copy(), np.zeros(probability.shape, bool)
    if gate is not None:
        for row in windows.itertuples():
            if row.clf < gate:  # NaN never is
                rect = (
                    slice(row.centre_y, row.centre_y + row.centre_height),
                    slice(row.centre_x, row.centre_x + row.centre_width),
                )
                out[rect], region[rect] = 0, True
    return out, region


def slide_case(shape=(100, 130), keep=16, seed=0):
    """A probability map of smooth blobs (many cross centre and band borders), a truth near it, windows with scores."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    for _ in range(14):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(2, 14)), int(rng.integers(2, 14)))
        cv2.ellipse(truth, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    noisy = cv2.GaussianBlur(truth.astype(np.float32), (7, 7), 2) + rng.normal(0, 0.15, shape).astype(np.float32)
    probability = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
    n = -(-shape[0] // keep) * -(-shape[1] // keep)
    clf = rng.random(n)
    clf[rng.random(n) < 0.2] = np.nan  # background: never reached the models
    return probability, truth, windows_table(shape, keep, clf)


@pytest.mark.parametrize("band_rows", [7, 16, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_gate_equals_gating_the_prediction_outright(band_rows, seed):
    probability, truth, windows = slide_case(seed=seed)
    gates = sweep_gates(0.37)
    cutoff = 128
    outcomes = slide_gates(probability, truth, windows, gates, cutoff, band_rows=band_rows)
    assert [o.gate for o in outcomes] == gates
    losses = []
    for outcome in outcomes:
        gated, region = gated_outright(probability, windows, outcome.gate)
        expected = value_histogram(gated, truth)
        assert np.array_equal(outcome.histogram.pixels, expected.pixels)
        assert np.array_equal(outcome.histogram.truth, expected.truth)
        assert outcome.lost_pixels == int(((probability >= cutoff) & (truth != 0) & region).sum())
        reference = match_objects(gated, truth, cutoff=cutoff).counts()
        assert outcome.objects.counts() == reference
        assert outcome.skipped_windows == int((windows["clf"] < (outcome.gate or 0)).sum())
        losses.append(outcome.lost_pixels)
    assert losses[0] == losses[1] == 0 and losses[-1] > 0, "off and 0 gate nothing, 0.95 loses pixels"
    assert outcomes[-1].objects.counts()["matched_objects"] < outcomes[0].objects.counts()["matched_objects"]


def test_a_gated_window_with_a_whole_glomerulus_loses_it():
    shape, keep = (64, 64), 32
    truth = np.zeros(shape, np.uint8)
    truth[4:12, 4:12] = 1  # inside centre 0
    truth[40:50, 40:50] = 1  # inside centre 3
    probability = (truth * 230).astype(np.uint8)
    windows = windows_table(shape, keep, [0.2, np.nan, 0.9, 0.8])
    outcomes = {o.gate: o for o in slide_gates(probability, truth, windows, [None, 0.3], 128)}
    off, gated = outcomes[None], outcomes[0.3]
    assert off.objects.counts() == {"predicted_objects": 2, "truth_objects": 2, "matched_objects": 2}
    assert gated.objects.counts() == {"predicted_objects": 1, "truth_objects": 2, "matched_objects": 1}
    assert (gated.lost_pixels, off.lost_pixels) == (64, 0)
    assert (gated.tissue_windows, gated.scored_windows, gated.skipped_windows) == (3, 3, 1)
    table = gate_table("s", [off, gated], configured=0.3, threshold=0.5)
    assert list(table.columns) == GATE_COLUMNS
    assert table["dice"].tolist() == [1.0, pytest.approx(2 * 100 / (100 + 164))]
    assert table["configured"].tolist() == [False, True] and np.isnan(table["gate"].iloc[0])


def test_windows_not_segmented_in_the_store_are_counted_as_unmeasured():
    probability, truth, _ = slide_case(shape=(40, 40), keep=20)
    windows = windows_table(
        (40, 40), 20, [0.1, 0.6, 0.45, np.nan], segmented=[0, 1, 0, 0]
    )  # gated at 0.5 when predicted
    outcomes = {o.gate: o for o in slide_gates(probability, truth, windows, [None, 0.05, 0.5, 0.7], 128)}
    assert [outcomes[g].unmeasured_windows for g in (None, 0.05, 0.5, 0.7)] == [2, 2, 0, 0]
    assert outcomes[None].tissue_windows == 3


def test_no_windows_or_no_scores_gate_nothing():
    probability, truth, windows = slide_case(shape=(40, 50), keep=16)
    headless = windows.assign(clf=np.nan, segmented=1)
    ungated = value_histogram(probability, truth)
    for table in (None, headless):
        outcomes = slide_gates(probability, truth, table, GATES, 128)
        for outcome in outcomes:
            assert np.array_equal(outcome.histogram.pixels, ungated.pixels) and outcome.skipped_windows == 0
        assert outcomes[0].tissue_windows == (0 if table is None else len(headless))


def write_windows(path, table):
    table.to_csv(path, index=False)
    return path


def test_read_windows_keeps_empty_scores_and_rejects_bad_tables(tmp_path):
    shape = (40, 50)
    table = windows_table(shape, 16, [0.5, np.nan] * 6)
    table.loc[0, "tissue"] = np.nan
    read = read_windows(write_windows(tmp_path / "w.csv", table), shape)
    assert read["clf"].isna().sum() == 6 and np.isnan(read.loc[0, "tissue"])
    assert read["centre_y"].dtype == np.int64 and read["segmented"].tolist() == table["segmented"].tolist()
    bad = {
        "lacks": table.drop(columns="clf"),
        "outside": table.assign(centre_x=table["centre_x"] + 2),
        "tile": table.iloc[1:],
        "clf": table.assign(clf=1.5),
        "segmented": table.assign(segmented=2),
        "numeric": table.assign(clf="high"),
    }
    for name, frame in bad.items():
        with pytest.raises(InputError, match=f"{name}.csv"):
            read_windows(write_windows(tmp_path / f"{name}.csv", frame), shape)
    with pytest.raises(InputError, match="tile"):
        read_windows(tmp_path / "tile.csv", shape)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty.csv: not a windows table"):
        read_windows(tmp_path / "empty.csv", shape)


def test_evaluate_slide_gates_as_configured_and_says_when_it_cannot(tmp_path):
    probability, truth, windows = slide_case(shape=(64, 80), keep=16, seed=3)
    write_slide_store(tmp_path / "s.zarr", np.zeros((3, 64, 80), np.uint8), truth, chunk=16, min_level_size=16)
    write_probability(tmp_path / "s_pred.zarr", probability, chunk=16)
    windows_csv = write_windows(tmp_path / "s.windows.csv", windows)
    histogram, table = evaluate_slide(
        tmp_path / "s_pred.zarr", tmp_path / "s.zarr", windows_csv, threshold=0.5, clf_threshold=0.42
    )
    expected = value_histogram(gated_outright(probability, windows, 0.42)[0], truth)
    assert np.array_equal(histogram.pixels, expected.pixels) and np.array_equal(histogram.truth, expected.truth)
    assert len(table) == len(GATES) + 1 and table["configured"].sum() == 1
    assert table.loc[table["configured"], "gate"].item() == 0.42 and (table["note"] == "").all()
    assert set(table["slide"]) == {"s_pred"}
    ungated = slide_histogram(tmp_path / "s_pred.zarr", tmp_path / "s.zarr")
    histogram, table = evaluate_slide(
        tmp_path / "s_pred.zarr", tmp_path / "s.zarr", tmp_path / "absent.csv", threshold=0.5, clf_threshold=0.5
    )
    assert np.array_equal(histogram.pixels, ungated.pixels) and (table["note"] == NO_TABLE).all()
    headless = write_windows(tmp_path / "headless.csv", windows.assign(clf=np.nan))
    _, table = evaluate_slide(
        tmp_path / "s_pred.zarr", tmp_path / "s.zarr", headless, threshold=0.5, clf_threshold=None
    )
    assert (table["note"] == NO_SCORES).all() and table.loc[table["configured"], "gate"].isna().all()


def slide_rows(slide, dice, counts, objects, skipped, lost, note=""):
    """A two-gate table (off, 0.5; 0.5 configured) of one slide from hand-made numbers, a list per column."""
    rows = []
    for gate, d, (intersection, predicted, true), (p_obj, t_obj, m_obj), s, lost_px in zip(
        [np.nan, 0.5], dice, counts, objects, skipped, lost, strict=True
    ):
        rows.append(
            {
                "slide": slide,
                "gate": gate,
                "configured": gate == 0.5,
                "threshold": 0.5,
                "dice": d,
                "intersection": intersection,
                "predicted_pixels": predicted,
                "truth_pixels": true,
                "lost_pixels": lost_px,
                "predicted_objects": p_obj,
                "truth_objects": t_obj,
                "matched_objects": m_obj,
                "tissue_windows": 10,
                "scored_windows": 10,
                "skipped_windows": s,
                "unmeasured_windows": 0,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=GATE_COLUMNS)


def test_gate_sweep_pools_the_slides_per_gate():
    a = slide_rows("a", [0.9, 0.8], [(90, 100, 100), (80, 90, 100)], [(3, 3, 3), (2, 3, 2)], [0, 4], [0, 10])
    b = slide_rows("b", [0.5, 0.5], [(25, 50, 50), (25, 50, 50)], [(1, 2, 1), (1, 2, 1)], [0, 6], [0, 0], note="x")
    sweep = gate_sweep(pd.concat([b, a], ignore_index=True))
    assert list(sweep.columns) == SWEEP_COLUMNS
    off, gated = sweep.iloc[0], sweep.iloc[1]
    assert np.isnan(off["gate"]) and gated["gate"] == 0.5 and gated["configured"] and not off["configured"]
    assert gated["mean_dice"] == pytest.approx(0.65) and gated["slides"] == 2
    assert gated["global_dice"] == pytest.approx(2 * 105 / (140 + 150))
    assert gated["pixel_recall"] == pytest.approx(105 / 150) and gated["pixel_recall_lost"] == pytest.approx(10 / 150)
    assert (gated["skipped_windows"], gated["skipped_share"]) == (10, 0.5)
    assert (gated["predicted_objects"], gated["truth_objects"], gated["matched_objects"]) == (3, 5, 3)
    assert gated["object_recall"] == pytest.approx(3 / 5) and off["object_recall"] == pytest.approx(4 / 5)
    assert off["skipped_share"] == 0 and gated["note"] == "x"
    objects = configured_objects(pd.concat([a, b], ignore_index=True)).set_index("slide")
    assert objects.loc["a", "matched_objects"] == 2 and objects.loc["a", "object_recall"] == pytest.approx(2 / 3)
    assert objects.loc["b", "object_threshold"] == 0.5
    with pytest.raises(ValueError, match="configured"):
        configured_objects(pd.concat([a, a], ignore_index=True))


def test_sweep_gates_adds_the_configured_gate():
    assert sweep_gates(0.5) == [None, *np.round(np.arange(0, 1, 0.05), 2).tolist()]
    assert sweep_gates(0.37, [None, 0.3, 0.4]) == [None, 0.3, 0.37, 0.4]
    assert sweep_gates(None, [0.1]) == [None, 0.1]
    assert GATES[0] is None and len(GATES) == 21
