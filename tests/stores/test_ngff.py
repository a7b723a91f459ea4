"""Slide-store writing: pyramid levels, write_slide_store, write_labels; where SlideStore finds labels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from tests.builders import write_labels, write_slide_store
from tilepipe.errors import InputError
from tilepipe.stores.ngff import create_label_levels, level_shapes, max_2x2, mean_2x2
from tilepipe.stores.slide import SlideStore


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8)


def test_level_shapes_halve_rounding_up_until_the_long_side_fits():
    assert level_shapes(3000, 1001, 1024) == [(3000, 1001), (1500, 501), (750, 251)]
    assert level_shapes(1024, 700, 1024) == [(1024, 700)]
    assert level_shapes(1025, 3, 1024) == [(1025, 3), (513, 2)]


def test_max_2x2_keeps_single_pixels_and_odd_edges():
    mask = np.zeros((5, 7), np.uint8)
    mask[1, 1] = mask[4, 6] = 1
    expected = np.zeros((3, 4), np.uint8)
    expected[0, 0] = expected[2, 3] = 1
    np.testing.assert_array_equal(max_2x2(mask), expected)


def test_write_slide_store_round_trips_image_labels_and_pyramid(tmp_path):
    image = random_image(203, 150)
    labels = np.zeros((203, 150), np.uint8)
    labels[50:80, 10:40] = 7  # any non-zero value is foreground
    write_slide_store(tmp_path / "a.zarr", image, labels, chunk=32, min_level_size=60)

    store = SlideStore(tmp_path / "a.zarr")
    np.testing.assert_array_equal(store.levels[0][:], image)
    np.testing.assert_array_equal(store.labels[:], labels > 0)
    assert [store.level_shape(i) for i in range(len(store.levels))] == [(203, 150), (102, 75), (51, 38)]
    np.testing.assert_array_equal(store.levels[2][:], mean_2x2(mean_2x2(image)))
    assert store.levels[0].chunks == (3, 32, 32) and store.labels.chunks == (32, 32)
    np.testing.assert_array_equal(store.read_image(190, 140, 20, 20)[:, :13, :10], image[:, 190:, 140:])


@pytest.mark.parametrize("chunk", [7, 9])
def test_pyramid_levels_are_exact_with_odd_chunk_heights(tmp_path, chunk):
    """With an odd chunk height a band's last row waits for its pair: every level is the reduction of the whole."""
    image, labels = random_image(61, 45), np.random.default_rng(1).integers(0, 2, (61, 45), dtype=np.uint8)
    write_slide_store(tmp_path / "a.zarr", image, labels, chunk=chunk, min_level_size=8)
    store = SlideStore(tmp_path / "a.zarr")
    group = zarr.open_group(tmp_path / "a.zarr", mode="r")
    expected_image, expected_labels = image, labels
    for level in range(len(store.levels)):
        np.testing.assert_array_equal(store.levels[level][:], expected_image)
        np.testing.assert_array_equal(group[f"labels/glomeruli/{level}"][:], expected_labels)
        expected_image, expected_labels = mean_2x2(expected_image), max_2x2(expected_labels)
    assert len(store.levels) == 4


def test_write_slide_store_without_labels_has_no_labels_group(tmp_path):
    write_slide_store(tmp_path / "a.zarr", random_image(40, 50), None, chunk=16, min_level_size=64)
    assert not (tmp_path / "a.zarr" / "labels").exists()
    assert len(SlideStore(tmp_path / "a.zarr").levels) == 1


@pytest.mark.parametrize(
    ("image", "labels"),
    [
        (np.zeros((40, 50, 3), np.uint8), None),
        (np.zeros((3, 40, 50), np.float32), None),
        (np.zeros((3, 40, 50), np.uint8), np.zeros((40, 51), np.uint8)),
    ],
)
def test_write_slide_store_refuses_wrong_arrays(tmp_path, image, labels):
    with pytest.raises(ValueError):
        write_slide_store(tmp_path / "a.zarr", image, labels)
    assert not (tmp_path / "a.zarr").exists()


def test_write_labels_adds_a_mask_band_by_band(tmp_path):
    write_slide_store(
        tmp_path / "a.zarr", random_image(150, 90), np.ones((150, 90), np.uint8), chunk=32, min_level_size=40
    )
    pseudo = np.zeros((150, 90), np.uint8)
    pseudo[100:140, 5:60] = 1
    calls = []

    def band_reader(y0: int, y1: int) -> np.ndarray:
        calls.append((y0, y1))
        return pseudo[y0:y1] * 255

    write_labels(tmp_path / "a.zarr", band_reader, name="pseudo")

    assert calls == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 150)]
    group = zarr.open_group(tmp_path / "a.zarr", mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["glomeruli", "pseudo"]
    np.testing.assert_array_equal(group["labels/pseudo/0"][:], pseudo)
    np.testing.assert_array_equal(group["labels/pseudo/1"][:], max_2x2(pseudo))
    assert [group[f"labels/pseudo/{i}"].shape for i in range(3)] == [(150, 90), (75, 45), (38, 23)]
    assert SlideStore(tmp_path / "a.zarr").labels[:].min() == 1  # glomeruli untouched


def test_write_labels_replaces_a_mask_and_a_failure_changes_nothing(tmp_path):
    write_slide_store(tmp_path / "a.zarr", random_image(64, 64), None, chunk=32, min_level_size=64)
    write_labels(tmp_path / "a.zarr", lambda y0, y1: np.ones((y1 - y0, 64)))
    assert SlideStore(tmp_path / "a.zarr").labels[:].min() == 1

    def failing(y0: int, y1: int) -> np.ndarray:
        if y0 > 0:
            raise RuntimeError("model crashed")
        return np.zeros((y1 - y0, 64))

    with pytest.raises(RuntimeError):
        write_labels(tmp_path / "a.zarr", failing)
    assert SlideStore(tmp_path / "a.zarr").labels[:].min() == 1
    assert sorted(p.name for p in (tmp_path / "a.zarr" / "labels").iterdir()) == ["glomeruli", "zarr.json"]

    with pytest.raises(ValueError, match="shape"):
        write_labels(tmp_path / "a.zarr", lambda y0, y1: np.ones((y1 - y0, 63)))


def test_labels_path_reads_a_label_image_at_the_root_or_a_slide_stores_labels(tmp_path):
    image, mask = random_image(70, 50), np.zeros((70, 50), np.uint8)
    mask[10:30, 5:25] = 1
    write_slide_store(tmp_path / "slide.zarr", image, None, chunk=16, min_level_size=32)
    write_slide_store(tmp_path / "other.zarr", image, mask, chunk=16, min_level_size=32)
    shapes = SlideStore(tmp_path / "slide.zarr").level_shapes
    with ThreadPoolExecutor(1) as pool:
        root = zarr.open_group(tmp_path / "labels.zarr", mode="w", zarr_format=3)
        create_label_levels(root, shapes, chunk=16, name="glomeruli", pool=pool, source="../slide.zarr").write(mask)
    for labels_path in ("labels.zarr", "other.zarr"):
        store = SlideStore(tmp_path / "slide.zarr", labels_path=tmp_path / labels_path)
        np.testing.assert_array_equal(store.read_labels(0, 0, 70, 50), mask, err_msg=labels_path)
    zarr.open_group(tmp_path / "empty.zarr", mode="w", zarr_format=3)
    with pytest.raises(InputError, match="neither a label image at its root nor") as err:
        _ = SlideStore(tmp_path / "slide.zarr", labels_path=tmp_path / "empty.zarr").labels
    assert "empty.zarr" in str(err.value)
