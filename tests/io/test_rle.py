"""Kaggle RLE: tilepipe.io.rle against a plain pixel-loop reference, edge cases, errors, memory."""

from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.measure import peak_bytes
from tilepipe.errors import InputError
from tilepipe.io import rle

SETTINGS = settings(max_examples=300, deadline=None)


def reference_encode(mask) -> str:
    """RLE by walking the pixels top to bottom, then left to right."""
    h, w = np.shape(mask)
    pixels = [1 if mask[y][x] else 0 for x in range(w) for y in range(h)]
    numbers = []
    i = 0
    while i < len(pixels):
        if pixels[i]:
            j = i
            while j < len(pixels) and pixels[j]:
                j += 1
            numbers += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(str(n) for n in numbers)


def reference_decode(text: str, shape) -> np.ndarray:
    """Mask from RLE by setting each pixel of each run in a column-major list."""
    h, w = shape
    pixels = [0] * (h * w)
    numbers = [int(t) for t in text.split()]
    for start, length in zip(numbers[0::2], numbers[1::2], strict=False):
        for p in range(start - 1, start - 1 + length):
            pixels[p] = 1
    return np.array([[pixels[x * h + y] for x in range(w)] for y in range(h)], dtype=np.uint8)


DTYPE_VALUES = {
    np.bool_: [False, True],
    np.uint8: [0, 1, 255, 7],
    np.int8: [0, 1, -1],
    np.int32: [0, 1, 70000],
    np.float32: [0.0, 1.0, 0.5, -2.0],
}


@st.composite
def masks(draw, max_side=24):
    """Masks of every supported dtype and memory layout, with long runs and noise."""
    dtype = draw(st.sampled_from(list(DTYPE_VALUES)))
    values = DTYPE_VALUES[dtype]
    h = draw(st.integers(1, max_side))
    # Widths of whole uint64 words take the encoder's zero-copy path.
    w = draw(st.one_of(st.integers(1, max_side), st.sampled_from([8, 16, 24])))
    if draw(st.booleans()):
        # Upscaled blocks: long runs, whole columns, runs across columns.
        ky, kx = draw(st.integers(1, h)), draw(st.integers(1, w))
        small = draw(arrays(dtype, (-(-h // ky), -(-w // kx)), elements=st.sampled_from(values)))
        mask = np.repeat(np.repeat(small, ky, axis=0), kx, axis=1)[:h, :w]
    else:
        mask = draw(arrays(dtype, (h, w), elements=st.sampled_from(values)))
    layout = draw(st.sampled_from(["c", "c", "fortran", "strided"]))
    if layout == "fortran":
        mask = np.asfortranarray(mask)
    elif layout == "strided":
        wide = np.zeros((h, 2 * w), dtype=mask.dtype)
        wide[:, ::2] = mask
        mask = wide[:, ::2]
    return mask


# Row bands as small as one row exercise the band seams of the encoder.
band_bytes = st.sampled_from([1, 8, 24, rle._BAND_BYTES])


@SETTINGS
@given(masks(), band_bytes)
def test_encode_matches_reference(mask, band):
    with mock.patch.object(rle, "_BAND_BYTES", band):
        assert rle.encode(mask) == reference_encode(mask)


@SETTINGS
@given(masks())
def test_decode_matches_reference(mask):
    text = reference_encode(mask)
    decoded = rle.decode(text, mask.shape)
    np.testing.assert_array_equal(decoded, reference_decode(text, mask.shape))
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous


@SETTINGS
@given(masks(), band_bytes)
def test_decode_inverts_encode(mask, band):
    with mock.patch.object(rle, "_BAND_BYTES", band):
        text = rle.encode(mask)
    np.testing.assert_array_equal(rle.decode(text, mask.shape), (mask != 0).astype(np.uint8))


@SETTINGS
@given(masks(), st.data())
def test_window_equals_slice_of_full_decode(mask, data):
    h, w = mask.shape
    y0, y1 = sorted(data.draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
    x0, x1 = sorted(data.draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
    runs = rle.parse(reference_encode(mask), mask.shape)
    window = runs.window(y0, y1, x0, x1)
    np.testing.assert_array_equal(window, rle.decode(reference_encode(mask), mask.shape)[y0:y1, x0:x1])
    assert window.shape == (y1 - y0, x1 - x0) and window.flags.c_contiguous


def _mask(h, w, pixels):
    mask = np.zeros((h, w), dtype=np.uint8)
    for y, x in pixels:
        mask[y, x] = 1
    return mask


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (_mask(3, 4, [(0, 0)]), "1 1"),  # first pixel
        (_mask(3, 4, [(2, 3)]), "12 1"),  # last pixel
        (_mask(3, 4, [(0, 0), (2, 3)]), "1 1 12 1"),
        (np.ones((3, 4), np.uint8), "1 12"),  # full mask: one run through every column
        (np.zeros((3, 4), np.uint8), ""),
        (_mask(3, 2, [(1, 0), (2, 0), (0, 1)]), "2 3"),  # bottom of column 0 joins top of column 1
        (_mask(3, 2, [(1, 0), (2, 0), (1, 1)]), "2 2 5 1"),  # top of column 1 unset: two runs
        (_mask(1, 9, [(0, 0), (0, 1), (0, 2), (0, 5), (0, 8)]), "1 3 6 1 9 1"),  # 1 x N: runs join across columns
        (_mask(9, 1, [(0, 0), (1, 0), (4, 0), (8, 0)]), "1 2 5 1 9 1"),  # N x 1
        (np.ones((1, 1), np.uint8), "1 1"),
        (np.zeros((1, 1), np.uint8), ""),
        (np.ones((1, 16), np.uint8), "1 16"),
        (np.ones((16, 1), np.uint8), "1 16"),
    ],
)
def test_edge_cases(mask, expected):
    assert rle.encode(mask) == expected
    assert rle.encode(mask.astype(bool)) == expected
    np.testing.assert_array_equal(rle.decode(expected, mask.shape), mask)


def test_any_nonzero_value_is_foreground():
    values = np.array([[0, 1, 255], [7, 0, 128], [2, 3, 0]], dtype=np.uint8)
    assert rle.encode(values) == rle.encode(values != 0) == "2 3 6 3"
    assert rle.encode(values.astype(np.float64) * -0.5) == "2 3 6 3"


def test_empty_input_decodes_to_zeros():
    for empty in ("", "  ", None, float("nan")):
        decoded = rle.decode(empty, (3, 5))
        assert decoded.shape == (3, 5) and not decoded.any()


def test_touching_runs_decode_as_one():
    np.testing.assert_array_equal(rle.decode("1 2 3 2", (2, 2)), np.ones((2, 2), np.uint8))


def test_segments_cut_runs_at_column_ends():
    x, y0, y1 = rle.parse("3 5 10 1", (3, 4)).segments()
    # Pixels 3..7 (1-indexed): column 0 row 2, column 1 rows 0-2, column 2 row 0.
    assert x.tolist() == [0, 1, 2, 3]
    assert y0.tolist() == [2, 0, 0, 0]
    assert y1.tolist() == [3, 3, 1, 1]


def test_window_outside_mask_is_rejected():
    with pytest.raises(ValueError, match="outside mask"):
        rle.parse("1 1", (3, 4)).window(0, 4, 0, 4)


def test_encode_rejects_non_2d_masks():
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2), np.uint8))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1 2 3", "RLE has an odd number of numbers (3)"),
        ("1 2 x 4", "RLE token 'x' is not an integer"),
        ("1 2.5", "RLE token '2.5' is not an integer"),
        ("1 1_0", "RLE token '1_0' is not an integer"),
        ("0 3", "RLE run 1 starts at 0; starts are 1-indexed"),
        ("1 2 -4 1", "RLE run 2 starts at -4"),
        ("1 0", "RLE run 1 has length 0; lengths must be at least 1"),
        ("1 2 5 -3", "RLE run 2 has length -3"),
        ("10 4", "RLE run 1 (start 10, length 4) ends past the last pixel of the 3 x 4 mask (12 pixels)"),
        ("13 1", "RLE run 1 (start 13, length 1) ends past the last pixel"),
        ("1 99999999999999999999", "RLE run 1 (start 1, length 99999999999999999999) ends past"),
        ("1 2 2 3", "RLE runs 1 and 2 overlap or are out of order: run 1 covers pixels 1 to 2, run 2 starts at 2"),
        ("5 2 1 2", "RLE runs 1 and 2 overlap or are out of order: run 1 covers pixels 5 to 6, run 2 starts at 1"),
    ],
)
def test_bad_rle_names_source_and_problem(text, problem):
    with pytest.raises(InputError) as caught:
        rle.parse(text, (3, 4), source="data/train.csv")
    assert str(caught.value).startswith("data/train.csv: ")
    assert problem in str(caught.value)
    with pytest.raises(InputError, match="train.csv"):
        rle.decode(text, (3, 4), source="data/train.csv")


def glomerulus_mask(size: int, seed: int = 0) -> np.ndarray:
    """A (size, size) uint8 mask of filled ellipses, some cut by the border."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(size // 40):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 60 + 1, size // 16 + 2, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def test_disc_mask_matches_reference():
    mask = glomerulus_mask(300)
    mask[:, 100] = 1  # a full column: runs join across three columns
    text = rle.encode(mask)
    assert text == reference_encode(mask)
    np.testing.assert_array_equal(rle.decode(text, mask.shape), mask)


def test_memory_stays_within_the_mask_size():
    mask = glomerulus_mask(2048)
    text = rle.encode(mask)
    # An int64 (or any 8-byte) copy of the mask would be 8x its bytes.
    assert peak_bytes(rle.encode, mask) < 0.5 * mask.nbytes
    # The decoded mask itself is 1x.
    assert peak_bytes(rle.decode, text, mask.shape) < 1.5 * mask.nbytes


def test_encode_converts_other_layouts_band_by_band():
    mask = glomerulus_mask(2048)
    expected = rle.encode(mask)
    with mock.patch.object(rle, "_BAND_BYTES", 1 << 18):
        for converted in (mask.astype(np.int32), mask[:, :2047], np.asfortranarray(mask)):
            assert peak_bytes(rle.encode, converted) < 0.25 * mask.nbytes
        assert rle.encode(mask.astype(np.int32)) == rle.encode(np.asfortranarray(mask)) == expected


@pytest.mark.parametrize("width", [1, 7, 64])
def test_column_blocks_encode_as_the_whole_mask(width):
    """Runs that continue from the bottom of one block into the top of the next are merged."""
    rng = np.random.default_rng(width)
    mask = (rng.random((23, 150)) < 0.4).astype(np.uint8)
    mask[-3:, 63] = mask[:4, 64] = 1  # a run across the block boundary at x = 64
    blocks = ((x0, mask[:, x0 : x0 + width]) for x0 in range(0, mask.shape[1], width))
    assert rle.encode_column_blocks(blocks, mask.shape[0]) == rle.encode(mask)
    assert rle.encode_column_blocks(iter([]), 23) == "" == rle.encode(np.zeros((23, 150), np.uint8))
