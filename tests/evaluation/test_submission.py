"""Submission: streamed RLE of probability stores (tilepipe.evaluation.submission)."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilepipe.errors import InputError
from tilepipe.evaluation.submission import encode_prediction, write_submission
from tilepipe.io import rle
from tilepipe.stores.probability import foreground_cutoff, write_probability


def probability_of(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A uint8 probability that is >= 128 exactly where ``mask`` is set (values spread over 0..255)."""
    rng = np.random.default_rng(seed)
    return np.where(mask != 0, rng.integers(128, 256, mask.shape), rng.integers(0, 128, mask.shape)).astype(np.uint8)


def store_of(path: Path, mask: np.ndarray, chunk: int = 8, seed: int = 0) -> Path:
    write_probability(path, probability_of(mask, seed), chunk)
    return path


def edge_masks():
    h, w = 24, 40  # blocks of one 8-column chunk: boundaries at columns 8, 16, 24, 32
    first, last = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    first[0, 0] = last[-1, -1] = 1
    crossing = np.zeros((h, w), np.uint8)
    crossing[10:, 7] = crossing[:5, 8] = 1  # one run from column 7 into column 8, across a block boundary
    crossing[:, 15:17] = 1  # a run over whole columns 15 and 16, across the next boundary
    crossing[20:, 31] = crossing[:, 32:40] = 1  # to the last pixel
    return {
        "empty": np.zeros((h, w), np.uint8),
        "full": np.ones((h, w), np.uint8),
        "first pixel": first,
        "last pixel": last,
        "runs crossing blocks": crossing,
    }


@pytest.mark.parametrize("name", list(edge_masks()))
def test_streamed_encoding_equals_whole_mask_encoding(tmp_path, name):
    mask = edge_masks()[name]
    path = store_of(tmp_path / "p.zarr", mask)
    assert encode_prediction(path, 0.5, block_bytes=1) == rle.encode(mask)  # one chunk per block
    assert encode_prediction(path, 0.5) == rle.encode(mask)  # one block
    if name == "runs crossing blocks":
        # rows 10..23 of column 7 (pixel 7 * 24 + 10, 1-based 179) and rows 0..4 of column 8: one run
        assert rle.encode(mask).split()[:2] == ["179", "19"]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    chunk=st.integers(1, 9),
    block_bytes=st.integers(1, 2000),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_streamed_encoding_matches_on_random_masks(shape, chunk, block_bytes, density, seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = store_of(Path(folder) / "p.zarr", mask, chunk, seed)
        assert encode_prediction(path, 0.5, block_bytes=block_bytes) == rle.encode(mask)


def test_threshold_compares_stored_values_with_the_cutoff(tmp_path):
    probability = np.array([[0, 101, 102, 127, 128, 254, 255]], dtype=np.uint8)
    path = tmp_path / "p.zarr"
    write_probability(path, probability, chunk=4)
    for threshold in (0.0, 0.4, 0.5, 1.0):
        expected = rle.encode(probability >= foreground_cutoff(threshold))
        assert encode_prediction(path, threshold, block_bytes=1) == expected
    assert encode_prediction(path, 0.5) == "5 3"  # 128, 254, 255 (column-major over one row)


def sample_submission(path: Path, ids: list[str]) -> Path:
    pd.DataFrame({"id": ids, "predicted": [""] * len(ids)}).to_csv(path, index=False)
    return path


def test_submission_lists_every_id_in_the_sample_order(tmp_path):
    masks = {"b2": edge_masks()["runs crossing blocks"], "a1": edge_masks()["empty"], "c3": edge_masks()["full"]}
    predictions = {slide: store_of(tmp_path / f"{slide}.zarr", mask) for slide, mask in masks.items()}
    sample = sample_submission(tmp_path / "sample_submission.csv", ["c3", "a1", "b2"])
    out = tmp_path / "results" / "submission.csv"
    write_submission(sample, predictions, 0.5, out)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == ["id", "predicted"] and written["id"].tolist() == ["c3", "a1", "b2"]
    assert written.loc[1, "predicted"] == ""
    for slide, encoding in zip(written["id"], written["predicted"], strict=False):
        np.testing.assert_array_equal(rle.decode(encoding, masks[slide].shape), masks[slide])
    assert out.read_text().splitlines()[2] == "a1,"


def test_an_id_without_prediction_names_the_sample_and_the_id(tmp_path):
    sample = sample_submission(tmp_path / "sample_submission.csv", ["a1", "zz9"])
    predictions = {"a1": store_of(tmp_path / "a1.zarr", edge_masks()["full"])}
    out = tmp_path / "submission.csv"
    with pytest.raises(InputError, match=r"sample_submission\.csv: id zz9 has no prediction"):
        write_submission(sample, predictions, 0.5, out)
    assert not out.exists()


def test_an_empty_sample_submission_is_an_input_error(tmp_path):
    header_only = sample_submission(tmp_path / "header_only.csv", [])
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    out = tmp_path / "submission.csv"
    with pytest.raises(InputError, match="header_only.csv: sample submission lists no ids"):
        write_submission(header_only, {}, 0.5, out)
    with pytest.raises(InputError, match="blank.csv: sample submission is empty"):
        write_submission(blank, {}, 0.5, out)
    assert not out.exists()


def test_a_repeated_id_or_missing_id_column_is_an_input_error(tmp_path):
    repeated = sample_submission(tmp_path / "repeated.csv", ["a1", "a1"])
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("slide,predicted\na1,\n")
    predictions = {"a1": store_of(tmp_path / "a1.zarr", edge_masks()["full"])}
    with pytest.raises(InputError, match="repeated.csv: id a1 is listed more than once"):
        write_submission(repeated, predictions, 0.5, tmp_path / "submission.csv")
    with pytest.raises(InputError, match="no_id.csv: sample submission has no 'id' column"):
        write_submission(no_id, predictions, 0.5, tmp_path / "submission.csv")


def test_a_store_that_is_not_a_probability_is_an_input_error(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(InputError, match="junk.zarr: not a probability store"):
        encode_prediction(tmp_path / "junk.zarr", 0.5)
