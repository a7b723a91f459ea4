"""Object-level scores: band-by-band matching equals a whole-image reference (tilepipe.evaluation.objects)."""

import itertools

import cv2
import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from tilepipe.errors import InputError
from tilepipe.evaluation.dice import RunsRows
from tilepipe.evaluation.objects import (
    OBJECT_COLUMNS,
    ObjectMatcher,
    match_objects,
    object_scores,
    submission_objects,
)
from tilepipe.io import rle
from tilepipe.stores.probability import read_probability, write_probability


def reference(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Whole-image objects (cv2, 8-connected) and every overlap, and the matches by float IoU >= 0.5."""
    n_p, p_labels = cv2.connectedComponents(predicted.astype(np.uint8), connectivity=8)
    n_t, t_labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    p_area = np.bincount(p_labels.ravel(), minlength=n_p)[1:]
    t_area = np.bincount(t_labels.ravel(), minlength=n_t)[1:]
    triples, matches = [], []
    for p in range(1, n_p):
        inside = p_labels == p
        for t in np.unique(t_labels[inside]):
            if t == 0:
                continue
            shared = int((t_labels[inside] == t).sum())
            triples.append((int(p_area[p - 1]), int(t_area[t - 1]), shared))
            if shared / (p_area[p - 1] + t_area[t - 1] - shared) >= 0.5:
                matches.append((p, int(t)))
    return {
        "predicted_area": sorted(p_area.tolist()),
        "truth_area": sorted(t_area.tolist()),
        "triples": sorted(triples),
        "matches": matches,
    }


def as_reference(match) -> dict:
    pairs = match.pairs
    triples = zip(match.predicted_area[pairs[:, 0]], match.truth_area[pairs[:, 1]], match.overlap, strict=True)
    return {
        "predicted_area": sorted(match.predicted_area.tolist()),
        "truth_area": sorted(match.truth_area.tolist()),
        "triples": sorted((int(a), int(b), int(c)) for a, b, c in triples),
    }


def blobs(shape, seed, count=30, specks=0.005) -> np.ndarray:
    """Ellipses of many sizes (many cross any band border) and single-pixel specks, some touching diagonally."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(count):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    mask[rng.random(shape) < specks] = 1
    return mask


def shifted(mask: np.ndarray, seed: int) -> np.ndarray:
    """A prediction of ``mask``: shifted a few pixels, eroded or dilated, some objects dropped, specks added."""
    rng = np.random.default_rng(seed)
    out = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    kernel = np.ones((3, 3), np.uint8)
    out = cv2.dilate(out, kernel) if seed % 2 else cv2.erode(out, kernel)
    out[rng.random(mask.shape) < 0.003] = 1
    out[:, : mask.shape[1] // 5] = 0
    return out


@pytest.mark.parametrize("band_rows", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bands_give_the_whole_image_objects_and_overlaps(band_rows, seed):
    truth = blobs((180, 230), seed)
    predicted = shifted(truth, seed)
    expected = reference(predicted, truth)
    match = match_objects(predicted, truth, band_rows=band_rows)
    assert as_reference(match) == {key: expected[key] for key in ("predicted_area", "truth_area", "triples")}
    assert match.counts()["matched_objects"] == len(expected["matches"])
    assert 0 < len(expected["matches"]) < len(expected["truth_area"]), "the case has matches and misses"


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 25), st.integers(1, 25)),
    density=st.tuples(st.floats(0, 0.8), st.floats(0, 0.8)),
    band_rows=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_random_masks_match_the_reference_and_matches_are_one_to_one(shape, density, band_rows, seed):
    rng = np.random.default_rng(seed)
    predicted = (rng.random(shape) < density[0]).astype(np.uint8)
    truth = (rng.random(shape) < density[1]).astype(np.uint8)
    expected = reference(predicted, truth)
    match = match_objects(predicted, truth, band_rows=band_rows)
    assert as_reference(match) == {key: expected[key] for key in ("predicted_area", "truth_area", "triples")}
    matched = match.matched_pairs
    assert len(matched) == len(expected["matches"])
    assert len(set(matched[:, 0])) == len(matched) and len(set(matched[:, 1])) == len(matched), "one to one"
    reference_matches = np.asarray(expected["matches"]).reshape(-1, 2)
    assert len(set(reference_matches[:, 0])) == len(set(reference_matches[:, 1])) == len(reference_matches)


def test_a_diagonal_chain_across_every_band_border_is_one_object():
    truth = np.eye(12, dtype=np.uint8)[:, ::-1] | np.eye(12, dtype=np.uint8)  # an X: two diagonals crossing
    for band_rows in (1, 2, 5):
        match = match_objects(truth, truth, band_rows=band_rows)
        assert match.counts() == {"predicted_objects": 1, "truth_objects": 1, "matched_objects": 1}
        assert match.predicted_area.tolist() == [int(truth.sum())]


def square(shape=(14, 30), y=2, x=2, height=10, width=10) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y : y + height, x : x + width] = 1
    return mask


@pytest.mark.parametrize(
    ("pixels", "matched"),
    [(49, 0), (50, 1), (51, 1)],  # IoU 0.49, exactly 0.5 (matches) and 0.51 against a 100-pixel object
)
@pytest.mark.parametrize("band_rows", [3, 100])
def test_iou_at_the_threshold(pixels, matched, band_rows):
    truth = square()
    predicted = np.zeros_like(truth)
    rows, rest = divmod(pixels, 10)
    predicted[2 : 2 + rows, 2:12] = 1
    predicted[2 + rows, 2 : 2 + rest] = 1  # a connected subset of the square: IoU = pixels / 100
    match = match_objects(predicted, truth, band_rows=band_rows)
    assert match.overlap.tolist() == [pixels]
    assert match.counts() == {"predicted_objects": 1, "truth_objects": 1, "matched_objects": matched}


def test_one_object_split_in_two():
    truth = square()
    halves = truth.copy()
    halves[:, 6:8] = 0  # columns 2-5 and 8-11: 40 pixels each, IoU 0.4
    match = match_objects(halves, truth, band_rows=4)
    assert match.counts() == {"predicted_objects": 2, "truth_objects": 1, "matched_objects": 0}
    uneven = truth.copy()
    uneven[:, 6] = 0  # columns 2-5 (IoU 0.4) and 7-11 (50 pixels: IoU exactly 0.5)
    counts = match_objects(uneven, truth, band_rows=4).counts()
    assert counts == {"predicted_objects": 2, "truth_objects": 1, "matched_objects": 1}
    scores = object_scores(*counts.values())
    assert (scores["object_precision"], scores["object_recall"], scores["count_error"]) == (0.5, 1.0, 1.0)


def test_two_objects_merged_into_one():
    truth = square(width=10) | square(x=13, width=10)  # 100 and 100 pixels, a gap of 3 columns
    merged = square(width=21)  # covers both and the gap: IoU 100 / 210 with each
    match = match_objects(merged, truth, band_rows=3)
    assert match.counts() == {"predicted_objects": 1, "truth_objects": 2, "matched_objects": 0}
    uneven = square(width=14) | square(x=17, width=5)  # 140 and 50 pixels
    counts = match_objects(square(width=20), uneven, band_rows=3).counts()  # 200 pixels: IoU 0.7 and 0.25
    assert counts == {"predicted_objects": 1, "truth_objects": 2, "matched_objects": 1}
    scores = object_scores(*counts.values())
    assert scores["relative_count_error"] == -0.5 and scores["object_f1"] == pytest.approx(2 / 3)


def test_scores_of_empty_masks_follow_the_dice_convention():
    scores = object_scores([0, 0, 3, 4], [0, 2, 0, 5], [0, 0, 0, 3])
    np.testing.assert_allclose(scores["object_precision"], [1, 1, 0, 0.75])
    np.testing.assert_allclose(scores["object_recall"], [1, 0, 1, 0.6])
    np.testing.assert_allclose(scores["object_f1"], [1, 0, 0, 6 / 9])
    np.testing.assert_allclose(scores["count_error"], [0, -2, 3, -1])
    np.testing.assert_allclose(scores["relative_count_error"], [np.nan, -1, np.nan, -0.2])
    empty = match_objects(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8))
    assert empty.counts() == {"predicted_objects": 0, "truth_objects": 0, "matched_objects": 0}


def grid_cells(shape, ys, xs) -> np.ndarray:
    """Cells ``(y0, x0, y1, x1)`` of the grid cut at rows ``ys`` and columns ``xs``."""
    rows, cols = [0, *ys, shape[0]], [0, *xs, shape[1]]
    return np.array([(a, c, b, d) for a, b in itertools.pairwise(rows) for c, d in itertools.pairwise(cols)])


def cleared(mask, cells, removed) -> np.ndarray:
    out = mask.copy()
    for y0, x0, y1, x1 in cells[removed]:
        out[y0:y1, x0:x1] = 0
    return out


T_JUNCTIONS = np.array([(0, 0, 70, 50), (70, 0, 130, 50), (0, 50, 33, 117), (33, 50, 100, 117), (100, 50, 130, 117)])


@pytest.mark.parametrize("band_rows", [1, 16, 25, 1000])
@pytest.mark.parametrize("layout", ["grid", "t_junctions"])
def test_removing_cells_equals_clearing_them_in_the_mask(band_rows, layout):
    truth = blobs((130, 117), seed=7, count=25)
    predicted = shifted(truth, 3)
    cells = grid_cells(truth.shape, [16, 32, 48, 64, 80, 96, 112], [16, 32, 48, 64, 80, 96, 112])
    if layout == "t_junctions":
        cells = T_JUNCTIONS
    rng = np.random.default_rng(band_rows)
    removed = [np.zeros(len(cells), bool), np.ones(len(cells), bool)] + [rng.random(len(cells)) < q for q in (0.2, 0.5)]
    matcher = ObjectMatcher(truth.shape, cells)
    for y0 in range(0, truth.shape[0], band_rows):
        matcher.add_band(truth[y0 : y0 + band_rows], predicted[y0 : y0 + band_rows])
    got = matcher.finish(removed)
    for match, cut in zip(got, removed, strict=True):
        expected = reference(cleared(predicted, cells, cut), truth)
        assert as_reference(match) == {key: expected[key] for key in ("predicted_area", "truth_area", "triples")}
        assert match.counts()["matched_objects"] == len(expected["matches"])
    assert got[1].counts()["predicted_objects"] == 0
    assert got[0].counts() != got[3].counts(), "clearing half the cells changes the objects"


def test_band_shapes_are_checked():
    matcher = ObjectMatcher((10, 8))
    with pytest.raises(ValueError, match="bands must be"):
        matcher.add_band(np.zeros((4, 8)), np.zeros((4, 7)))
    matcher.add_band(np.zeros((4, 8)), np.zeros((4, 8)))
    with pytest.raises(ValueError, match="rows 0:4 of 10"):
        matcher.finish()
    with pytest.raises(ValueError, match="bands must be"):
        matcher.add_band(np.zeros((7, 8)), np.zeros((7, 8)))


def test_reads_a_probability_store_at_a_cutoff(tmp_path):
    truth = blobs((70, 90), seed=3)
    probability = (truth * 200).astype(np.uint8)
    probability[truth == 0] = 120  # below cutoff 128 everywhere outside the truth
    write_probability(tmp_path / "p.zarr", probability, chunk=16)
    match = match_objects(read_probability(tmp_path / "p.zarr"), zarr.array(truth), cutoff=128)
    n = cv2.connectedComponents(truth, connectivity=8)[0] - 1
    assert match.counts() == {"predicted_objects": n, "truth_objects": n, "matched_objects": n}
    assert match_objects(probability, truth, cutoff=100).counts()["predicted_objects"] == 1
    with pytest.raises(ValueError, match="shape"):
        match_objects(probability[:10], truth)


def write_rles(path, rows):
    pd.DataFrame(rows, columns=["id", "predicted"]).to_csv(path, index=False)
    return path


def test_submission_objects_per_image_in_the_truths_order(tmp_path):
    a_truth, a_sub = square(), square(width=7)  # IoU 0.7
    b_truth, b_sub = square() | square(x=15), square(width=23)  # merged: no match
    truth = write_rles(tmp_path / "truth.csv", [["b", rle.encode(b_truth)], ["a", rle.encode(a_truth)], ["c", ""]])
    submission = write_rles(
        tmp_path / "submission.csv", [["a", rle.encode(a_sub)], ["b", rle.encode(b_sub)], ["c", ""]]
    )
    shapes = dict.fromkeys("abc", a_truth.shape)
    table = submission_objects(submission, truth, shapes)
    assert list(table.columns) == ["id", *OBJECT_COLUMNS]
    assert list(table["id"]) == ["b", "a", "c"]
    rows = table.set_index("id")
    assert rows.loc["a", ["predicted_objects", "truth_objects", "matched_objects"]].tolist() == [1, 1, 1]
    assert rows.loc["b", ["predicted_objects", "truth_objects", "matched_objects", "count_error"]].tolist() == [
        1,
        2,
        0,
        -1,
    ]
    assert rows.loc["c", "object_f1"] == 1.0
    assert np.array_equal(RunsRows(rle.parse(rle.encode(b_truth), b_truth.shape))[0:14], b_truth)
    missing = write_rles(tmp_path / "missing.csv", [["a", ""]])
    with pytest.raises(InputError, match="missing.csv: id b"):
        submission_objects(missing, truth, shapes)
