"""Evaluation: streamed Dice counts, threshold sweep, Kaggle mean Dice, submission vs truth (tilepipe.evaluation.dice)."""

import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import write_slide_store
from tilepipe.errors import InputError
from tilepipe.evaluation.dice import (
    RunsRows,
    ValueHistogram,
    best_threshold,
    dice,
    evaluation_threshold,
    read_histogram,
    read_truth_rows,
    rle_dice_counts,
    slide_dice,
    slide_histogram,
    submission_dice,
    threshold_sweep,
    value_histogram,
    write_histogram,
)
from tilepipe.evaluation.summary import summarize
from tilepipe.io import rle
from tilepipe.stores.probability import foreground_cutoff, read_probability, write_probability


def dice_counts(probability, truth, cutoffs, *, band_rows=None) -> dict[str, np.ndarray]:
    """The intersection, predicted and truth pixel counts of ``probability >= cutoff`` vs ``truth``, per cutoff."""
    return value_histogram(probability, truth, band_rows=band_rows).counts(cutoffs)


def brute_force_counts(probability: np.ndarray, truth: np.ndarray, cutoff: int) -> tuple[int, int, int]:
    predicted = probability >= cutoff
    true = truth != 0
    return int((predicted & true).sum()), int(predicted.sum()), int(true.sum())


def random_case(shape, seed):
    rng = np.random.default_rng(seed)
    probability = rng.integers(0, 256, shape, dtype=np.uint8)
    truth = (rng.random(shape) < 0.3).astype(np.uint8)
    return probability, truth


CUTOFFS = np.array([0, 1, 77, 127, 128, 200, 255, 256])


@pytest.mark.parametrize("band_rows", [None, 1, 7, 50, 1000])
def test_dice_counts_equal_brute_force_at_every_cutoff(band_rows):
    probability, truth = random_case((53, 37), seed=band_rows or 0)  # 7 and 50 do not divide 53
    counts = dice_counts(probability, truth, CUTOFFS, band_rows=band_rows)
    for i, cutoff in enumerate(CUTOFFS):
        expected = brute_force_counts(probability, truth, cutoff)
        assert (counts["intersection"][i], counts["predicted"][i], counts["truth"][i]) == expected


def test_dice_counts_stream_zarr_arrays_band_by_band(tmp_path):
    probability, truth = random_case((45, 30), seed=3)
    write_probability(tmp_path / "p.zarr", probability, chunk=8)
    truth_array = zarr.create_array(tmp_path / "t.zarr", shape=truth.shape, chunks=(5, 5), dtype=np.uint8)
    truth_array[...] = truth * 7  # any non-zero value is foreground
    counts = dice_counts(read_probability(tmp_path / "p.zarr"), truth_array, CUTOFFS)
    for i, cutoff in enumerate(CUTOFFS):
        assert (counts["intersection"][i], counts["predicted"][i], counts["truth"][i]) == brute_force_counts(
            probability, truth, cutoff
        )


def test_shape_mismatch_and_bad_cutoffs_are_rejected():
    probability, truth = random_case((10, 10), seed=0)
    with pytest.raises(ValueError, match="shape"):
        value_histogram(probability, truth[:9])
    with pytest.raises(ValueError, match="cutoffs"):
        value_histogram(probability, truth).counts([257])
    with pytest.raises(ValueError, match="cutoffs"):
        value_histogram(probability, truth).counts([0.5])


def test_dice_of_two_empty_masks_is_one():
    assert dice(0, 0, 0) == 1.0
    assert dice(0, 5, 0) == 0.0
    np.testing.assert_allclose(dice([3, 0], [4, 0], [4, 2]), [0.75, 0.0])


def histogram_of(probability, truth) -> ValueHistogram:
    return value_histogram(np.asarray(probability, np.uint8), np.asarray(truth, np.uint8))


def test_mean_dice_averages_images_and_counts_empty_vs_empty_as_one():
    empty = histogram_of(np.zeros((4, 4)), np.zeros((4, 4)))  # nothing predicted, nothing true
    half = np.zeros((4, 4))
    half[:, :2] = 255
    truth = np.zeros((4, 4))
    truth[:, :1] = 1
    partly = histogram_of(half, truth)  # 8 predicted, 4 true, 4 in both: Dice 8 / 12
    sweep = threshold_sweep({"empty": empty, "partly": partly}).set_index("cutoff")
    assert sweep.loc[128, "mean_dice"] == pytest.approx((1 + 8 / 12) / 2)
    assert sweep.loc[128, "global_dice"] == pytest.approx(8 / 12)  # the empty image adds no pixels


def test_sweep_finds_the_threshold_with_the_best_dice():
    # Truth pixels hold stored values 150..199, background pixels 0..149 (and 0 for the
    # rest): only cutoff 150 (threshold 150 / 255) keeps exactly the truth.
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    truth = ((values >= 150) & (values < 200)).astype(np.uint8)
    probability = np.where(values >= 200, 0, values).astype(np.uint8)
    sweep = threshold_sweep({"slide": histogram_of(probability, truth)})
    tuned = best_threshold(sweep, "mean_dice", prefer=0.5)
    assert tuned == pytest.approx(round(150 / 255, 4))
    assert sweep.loc[sweep["threshold"] == tuned, "mean_dice"].item() == 1.0
    assert sweep["mean_dice"].max() == 1.0 and (sweep["mean_dice"] == 1.0).sum() == 1
    assert evaluation_threshold(sweep, "tuned", 0.5) == tuned
    assert evaluation_threshold(sweep, "fixed", 0.5) == 0.5
    with pytest.raises(InputError, match="eval.threshold"):
        evaluation_threshold(sweep, "best", 0.5)


def test_sweep_thresholds_map_back_to_their_cutoffs():
    sweep = threshold_sweep({"slide": histogram_of(*random_case((8, 8), seed=0))})
    assert list(sweep["cutoff"]) == list(range(1, 256))
    assert [foreground_cutoff(t) for t in sweep["threshold"]] == list(sweep["cutoff"])


def test_ties_go_to_the_threshold_nearest_the_preferred_one():
    sweep = pd.DataFrame({"threshold": [0.2, 0.4, 0.6, 0.8], "mean_dice": [0.5, 0.9, 0.9, 0.9]})
    assert best_threshold(sweep, "mean_dice", prefer=0.65) == 0.6
    assert best_threshold(sweep, "mean_dice", prefer=0.1) == 0.4
    assert best_threshold(sweep, "mean_dice", prefer=0.5) == 0.4  # equally near: the lower


def test_slide_dice_table_per_slide_with_fold_and_best():
    probability, truth = random_case((20, 20), seed=5)
    histograms = {"b": histogram_of(probability, truth), "a": histogram_of(truth * 255, truth)}
    folds = pd.DataFrame({"slide": ["a", "b", "c"], "patient": ["1", "2", "3"], "fold": [1, 0, -1]})
    table = slide_dice(histograms, folds, 0.5)
    assert list(table["slide"]) == ["b", "a"]  # by fold
    row_b = table.set_index("slide").loc["b"]
    intersection, predicted, true = brute_force_counts(probability, truth, 128)
    assert (row_b["intersection"], row_b["predicted_pixels"], row_b["truth_pixels"]) == (intersection, predicted, true)
    assert row_b["dice"] == pytest.approx(2 * intersection / (predicted + true))
    assert row_b["best_dice"] >= row_b["dice"]
    assert table.set_index("slide").loc["a", "dice"] == 1.0
    with pytest.raises(ValueError, match="no fold"):
        slide_dice({"zzz": histograms["a"]}, folds, 0.5)


def test_summary_has_fold_means_pooled_dice_and_best_thresholds():
    table = pd.DataFrame(
        {
            "slide": ["a", "b", "c"],
            "fold": [0, 0, 1],
            "threshold": 0.5,
            "dice": [1.0, 0.5, 0.0],
            "intersection": [10, 5, 0],
            "predicted_pixels": [10, 10, 3],
            "truth_pixels": [10, 10, 3],
        }
    )
    sweep = pd.DataFrame(
        {"cutoff": [100, 128], "threshold": [0.3922, 0.502], "mean_dice": [0.6, 0.5], "global_dice": [0.5, 0.7]}
    )
    submission = pd.DataFrame(
        {"id": ["t"], "dice": [0.8], "intersection": [4], "predicted_pixels": [5], "truth_pixels": [5]}
    )
    summary = summarize({"stage1": table}, {"stage1": sweep}, submission, "stage1", 0.5).set_index(["scope", "fold"])
    assert summary.loc[("oof", "all"), "mean_dice"] == pytest.approx(0.5)
    assert summary.loc[("oof", "all"), "global_dice"] == pytest.approx(2 * 15 / 46)
    assert summary.loc[("oof", "0"), "mean_dice"] == pytest.approx(0.75)
    assert summary.loc[("oof", "1"), "slides"] == 1
    assert summary.loc[("oof_best_mean", "all"), "threshold"] == 0.3922
    assert summary.loc[("oof_best_global", "all"), "global_dice"] == 0.7
    assert summary.loc[("submission", "all"), "mean_dice"] == 0.8


def test_histogram_file_round_trip_and_validation(tmp_path):
    histogram = histogram_of(*random_case((9, 11), seed=1))
    write_histogram(histogram, tmp_path / "h.csv")
    again = read_histogram(tmp_path / "h.csv")
    assert np.array_equal(again.pixels, histogram.pixels) and np.array_equal(again.truth, histogram.truth)
    pd.DataFrame({"value": [0], "pixels": [1], "truth_pixels": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="bad.csv"):
        read_histogram(tmp_path / "bad.csv")


def test_slide_histogram_reads_the_prediction_against_the_store_labels(tmp_path):
    probability, truth = random_case((40, 50), seed=2)
    image = np.zeros((3, 40, 50), np.uint8)
    write_slide_store(tmp_path / "s.zarr", image, truth, chunk=16, min_level_size=16)
    write_probability(tmp_path / "p.zarr", probability, chunk=16)
    counts = slide_histogram(tmp_path / "p.zarr", tmp_path / "s.zarr").counts([128])
    assert (counts["intersection"][0], counts["predicted"][0], counts["truth"][0]) == brute_force_counts(
        probability, truth, 128
    )
    write_slide_store(tmp_path / "unlabeled.zarr", image, None, chunk=16, min_level_size=16)
    with pytest.raises(InputError, match="unlabeled.zarr.*no labels"):
        slide_histogram(tmp_path / "p.zarr", tmp_path / "unlabeled.zarr")
    write_probability(tmp_path / "small.zarr", probability[:30], chunk=16)
    with pytest.raises(InputError, match="small.zarr.*shape"):
        slide_histogram(tmp_path / "small.zarr", tmp_path / "s.zarr")


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    density=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_rle_dice_counts_equal_decoded_masks(shape, density, seed):
    rng = np.random.default_rng(seed)
    predicted = (rng.random(shape) < density[0]).astype(np.uint8)
    truth = (rng.random(shape) < density[1]).astype(np.uint8)
    counts = rle_dice_counts(rle.parse(rle.encode(predicted), shape), rle.parse(rle.encode(truth), shape))
    assert (counts["intersection"], counts["predicted"], counts["truth"]) == brute_force_counts(predicted, truth, 1)


def test_runs_rows_read_bands_of_the_decoded_mask():
    mask = random_case((17, 6), seed=4)[1]
    rows = RunsRows(rle.parse(rle.encode(mask), mask.shape))
    assert rows.shape == mask.shape
    for y0, y1 in [(0, 5), (5, 17), (16, 40), (3, 3)]:
        assert np.array_equal(rows[y0:y1], mask[y0:y1])


def write_rles(path, rows):
    pd.DataFrame(rows, columns=["id", "predicted"]).to_csv(path, index=False)
    return path


def test_submission_dice_on_a_hand_made_case(tmp_path):
    # 4 x 3 masks, pixels numbered down the columns from 1.
    # "a": truth = column 0 (pixels 1-4), submission = pixels 3-6: 2 shared -> Dice 2*2 / (4 + 4) = 0.5.
    # "b": both empty -> 1.  "c": truth 1 pixel, submission empty -> 0.
    truth = write_rles(tmp_path / "truth.csv", [["a", "1 4"], ["b", ""], ["c", "12 1"]])
    submission = write_rles(tmp_path / "submission.csv", [["c", ""], ["a", "3 4"], ["b", ""]])
    shapes = {"a": (4, 3), "b": (4, 3), "c": (4, 3)}
    table = submission_dice(submission, truth, shapes)
    assert list(table["id"]) == ["a", "b", "c"]  # the truth's order
    assert list(table["dice"]) == [0.5, 1.0, 0.0]
    assert list(table["intersection"]) == [2, 0, 0]
    assert table["dice"].mean() == pytest.approx(0.5)  # the Kaggle score of this submission


def test_submission_dice_names_the_bad_file(tmp_path):
    truth = write_rles(tmp_path / "truth.csv", [["a", "1 4"], ["b", ""]])
    shapes = {"a": (4, 3), "b": (4, 3)}
    missing = write_rles(tmp_path / "missing.csv", [["a", "1 4"]])
    with pytest.raises(InputError, match="missing.csv: id b"):
        submission_dice(missing, truth, shapes)
    past_end = write_rles(tmp_path / "past_end.csv", [["a", "10 5"], ["b", ""]])
    with pytest.raises(InputError, match=r"past_end.csv \(id a\)"):
        submission_dice(past_end, truth, shapes)


def test_truth_rows_of_one_slide(tmp_path):
    truth = write_rles(tmp_path / "truth.csv", [["a", "2 3"]])
    rows = read_truth_rows(truth, "a", (4, 3))
    assert np.array_equal(rows[0:4], rle.decode("2 3", (4, 3)))
    with pytest.raises(InputError, match="no row for id z"):
        read_truth_rows(truth, "z", (4, 3))
