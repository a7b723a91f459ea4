import time

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.builders import write_slide_store
from tilepipe.config import defaults
from tilepipe.data import tile_index
from tilepipe.data.tile_index import COLUMNS, write_tile_index
from tilepipe.errors import InputError
from tilepipe.stores.slide import SlideStore, read_window

GLASS = (245, 244, 246)
PINK = (215, 140, 185)

SATURATION = defaults("tiles")["saturation_threshold"]


def build_tile_index(*args, **kwargs):
    """``tile_index.build_tile_index`` at the schema's saturation threshold unless given."""
    return tile_index.build_tile_index(*args, **{"saturation_threshold": SATURATION, **kwargs})


def tissue_image(height: int, width: int, seed: int) -> np.ndarray:
    """A ``(3, y, x)`` slide: glass with a noisy pink tissue ellipse and some saturated noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height * 0.55) / (height * 0.4)) ** 2 + ((xx - width * 0.4) / (width * 0.3)) ** 2 < 1
    image = np.where(inside, np.array(PINK)[:, None, None], np.array(GLASS)[:, None, None])
    image = image + rng.integers(-30, 31, (3, height, width)) * inside
    image = image + rng.integers(-4, 5, (3, height, width))
    image[:, :40, :90] = rng.integers(0, 256, (3, 40, 90))
    return np.clip(image, 0, 255).astype(np.uint8)


def blob_mask(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), dtype=np.uint8)
    for cy, cx, r in [(300, 400, 90), (620, 700, 140), (950, 1250, 120), (130, 1000, 40)]:
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    return mask


@pytest.fixture(scope="module")
def labeled_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "labeled.zarr"
    # chunk 192 is not a multiple of the 128 px grid step: bands straddle blocks.
    write_slide_store(path, tissue_image(1000, 1300, seed=0), blob_mask(1000, 1300), chunk=192, min_level_size=256)
    return path


@pytest.fixture(scope="module")
def unlabeled_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "unlabeled.zarr"
    write_slide_store(path, tissue_image(1000, 1300, seed=1), None, chunk=256, min_level_size=256)
    return path


def brute_force_index(path, slide, size, shift, tissue_level, threshold=SATURATION):
    """The tile index tile by tile with read_window, for comparison."""
    store = SlideStore(path)
    height, width = store.shape
    scale = 2**tissue_level
    low = store.levels[tissue_level][:]
    saturated = cv2.cvtColor(np.ascontiguousarray(low.transpose(1, 2, 0)), cv2.COLOR_RGB2HSV)[..., 1] > threshold
    tissue = np.repeat(np.repeat(saturated, scale, axis=0), scale, axis=1)[:height, :width]
    rows = []
    for grid in [0, shift] if shift else [0]:
        for y in range(grid, height, size):
            for x in range(grid, width, size):
                tile = store.read_image(y, x, size, size)
                mask_area = int(store.read_labels(y, x, size, size).sum())
                ratio = mask_area / size**2
                binned = int(min(np.round(ratio * 20), 4))
                rows.append(
                    {
                        "slide": slide,
                        "y": y,
                        "x": x,
                        "size": size,
                        "grid": grid,
                        "mask_area": mask_area,
                        "mask_ratio": ratio,
                        "tissue_ratio": read_window(tissue, y, x, size, size).sum() / size**2,
                        "img_std": float(tile.std()),
                        "binned": binned,
                        "is_masked": binned > 0,
                    }
                )
    return pd.DataFrame(rows)


def assert_same_index(tiles: pd.DataFrame, expected: pd.DataFrame):
    assert list(tiles.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in tiles.dtypes.items()} == COLUMNS
    assert len(tiles) == len(expected)
    for column in ["slide", "y", "x", "size", "grid", "mask_area", "binned", "is_masked"]:
        assert list(tiles[column]) == list(expected[column]), column
    for column in ["mask_ratio", "tissue_ratio"]:
        np.testing.assert_array_equal(tiles[column], expected[column], err_msg=column)
    np.testing.assert_allclose(tiles["img_std"], expected["img_std"], rtol=0, atol=1e-9)


def test_labeled_slide_matches_brute_force(labeled_store):
    tiles = build_tile_index(labeled_store, "labeled", 256, 128)
    # 4 x 6 base tiles + 4 x 5 shifted tiles (origins 128 .. 896 and 128 .. 1152)
    assert len(tiles) == 24 + 4 * 5
    assert_same_index(tiles, brute_force_index(labeled_store, "labeled", 256, 128, tissue_level=3))
    assert tiles["is_masked"].any() and not tiles["is_masked"].all()
    assert set(tiles["binned"]) >= {0, 1, 4}


def test_unlabeled_slide_matches_brute_force(unlabeled_store):
    tiles = build_tile_index(unlabeled_store, "unlabeled", 256, 128)
    assert_same_index(tiles, brute_force_index(unlabeled_store, "unlabeled", 256, 128, tissue_level=3))
    assert (tiles["mask_area"] == 0).all() and not tiles["is_masked"].any()


@pytest.mark.parametrize(("size", "shift", "level"), [(200, 100, 2), (160, 0, 0), (300, 120, 1)])
def test_other_geometries_and_tissue_levels_match_brute_force(labeled_store, size, shift, level):
    tiles = build_tile_index(labeled_store, "labeled", size, shift, tissue_level=level)
    assert_same_index(tiles, brute_force_index(labeled_store, "labeled", size, shift, tissue_level=level))


def test_rows_are_sorted_by_grid_then_origin(labeled_store):
    tiles = build_tile_index(labeled_store, "labeled", 256, 128)
    assert list(tiles["grid"].unique()) == [0, 128]
    assert tiles.sort_values(["grid", "y", "x"]).index.equals(tiles.index)
    shifted = tiles[tiles["grid"] == 128]
    assert shifted["y"].min() == shifted["x"].min() == 128


@pytest.mark.parametrize("shift", [0, None])
def test_no_shift_means_base_grid_only(labeled_store, shift):
    tiles = build_tile_index(labeled_store, "labeled", 256, shift)
    assert len(tiles) == 24 and (tiles["grid"] == 0).all()


def test_default_tissue_level_is_about_32_pixels_per_tile(labeled_store):
    # 256 px tiles -> downsample 8 (level 3); 512 px -> 16, but the store stops at level 3.
    for size, level in [(256, 3), (512, 3), (64, 1)]:
        default = build_tile_index(labeled_store, "labeled", size, size // 2)
        chosen = build_tile_index(labeled_store, "labeled", size, size // 2, tissue_level=level)
        pd.testing.assert_frame_equal(default, chosen)
    # 2^l must divide the grid step gcd(250, 125) = 125: only level 0 does.
    default = build_tile_index(labeled_store, "labeled", 250, 125)
    pd.testing.assert_frame_equal(default, build_tile_index(labeled_store, "labeled", 250, 125, tissue_level=0))


def test_tissue_ratio_separates_glass_from_pink_tissue(tmp_path):
    image = np.empty((3, 512, 1024), dtype=np.uint8)
    image[:] = np.array(GLASS, dtype=np.uint8)[:, None, None]
    image[:, :, 512:] = np.array(PINK, dtype=np.uint8)[:, None, None]
    image[:, 256:, 256:512] = np.array((236, 232, 240), dtype=np.uint8)[:, None, None]  # tinted glass
    write_slide_store(tmp_path / "s.zarr", image, None, chunk=256, min_level_size=256)
    tiles = build_tile_index(tmp_path / "s.zarr", "s", 256, 128).set_index(["grid", "y", "x"])
    assert tiles.loc[(0, 0, 0), "tissue_ratio"] == 0.0
    assert tiles.loc[(0, 256, 256), "tissue_ratio"] == 0.0
    assert tiles.loc[(0, 0, 512), "tissue_ratio"] == 1.0
    assert tiles.loc[(128, 128, 384), "tissue_ratio"] == 0.5
    # the last shifted column passes the border: only its inside half is tissue
    assert tiles.loc[(128, 128, 896), "tissue_ratio"] == 0.5


def test_bins_round_half_to_even(tmp_path):
    size = 40
    areas = [40, 120, 200, 280, 360, 39, 41]  # mask ratios 0.025, 0.075, 0.125, 0.175, 0.225, ...
    labels = np.zeros((size, size * len(areas)), dtype=np.uint8)
    for i, area in enumerate(areas):
        tile = np.zeros(size * size, dtype=np.uint8)
        tile[:area] = 1
        labels[:, i * size : (i + 1) * size] = tile.reshape(size, size)
    image = np.full((3, size, size * len(areas)), 200, dtype=np.uint8)
    write_slide_store(tmp_path / "b.zarr", image, labels, chunk=64, min_level_size=64)
    tiles = build_tile_index(tmp_path / "b.zarr", "b", size, 0)
    assert list(tiles["mask_area"]) == areas
    # x 20 = 0.5, 1.5, 2.5, 3.5, 4.5 -> 0, 2, 2, 4, 4 (capped); 0.4875 -> 0; 0.5125 -> 1
    assert list(tiles["binned"]) == [0, 2, 2, 4, 4, 0, 1]
    assert list(tiles["is_masked"]) == [False, True, True, True, True, False, True]


def test_index_is_deterministic_and_round_trips_through_parquet(labeled_store, tmp_path):
    tiles = build_tile_index(labeled_store, "labeled", 256, 128)
    pd.testing.assert_frame_equal(tiles, build_tile_index(labeled_store, "labeled", 256, 128))
    path = tmp_path / "tiles" / "labeled.parquet"
    write_tile_index(tiles, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), tiles)
    assert [p.name for p in path.parent.iterdir()] == ["labeled.parquet"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 256, "shift": 256}, "0 <= shift < size"),
        ({"size": 256, "shift": -1}, "0 <= shift < size"),
        ({"size": 0, "shift": 0}, "0 <= shift < size"),
        ({"size": 256, "shift": 100, "tissue_level": 3}, "downsample 8 does not divide the tile grid step 4"),
        ({"size": 256, "shift": 128, "tissue_level": 4}, "tissue level 4 not in the store's levels 0..3"),
    ],
)
def test_bad_geometry_is_an_input_error(labeled_store, kwargs, message):
    with pytest.raises(InputError, match=message):
        build_tile_index(labeled_store, "labeled", **kwargs)


def test_missing_store_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        build_tile_index(tmp_path / "nope.zarr", "nope", 256, 128)
    assert err.value.path == str(tmp_path / "nope.zarr")


def test_4096_slide_indexes_in_a_few_seconds(tmp_path):
    yy, xx = np.ogrid[:4096, :4096]
    image = np.empty((3, 4096, 4096), dtype=np.uint8)
    image[0], image[1], image[2] = (yy * 3 + xx) % 256, (xx * 5 + yy // 7) % 256, (yy ^ xx) % 256
    labels = ((yy // 300 + xx // 300) % 3 == 0).astype(np.uint8)
    write_slide_store(tmp_path / "big.zarr", image, labels, chunk=512, min_level_size=1024)
    start = time.perf_counter()
    tiles = build_tile_index(tmp_path / "big.zarr", "big", 1024, 512)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"indexing a 4096 x 4096 store took {elapsed:.1f} s"
    assert len(tiles) == 16 + 16  # shifted origins 512, 1536, 2560, 3584
    store = SlideStore(tmp_path / "big.zarr")
    for row in tiles.iloc[[0, 5, 17, 31]].itertuples():
        assert row.mask_area == store.read_labels(row.y, row.x, 1024, 1024).sum()
        assert abs(row.img_std - store.read_image(row.y, row.x, 1024, 1024).std()) < 1e-9
