"""Training data loader over slide stores (tilepipe.data.tile_dataset)."""

import pickle

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from tests.builders import write_slide_store
from tilepipe.config import defaults
from tilepipe.data.augment import RECIPE_AUGMENTATIONS, build_augmentations
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, auto_level
from tilepipe.data.stain import ReinhardMap
from tilepipe.data.tile_dataset import TileDataset, make_loader
from tilepipe.data.tile_index import build_tile_index
from tilepipe.errors import InputError
from tilepipe.stores.slide import SlideStore

HEIGHT, WIDTH = 600, 700
TILE, INPUT = 256, 80  # 3.2x, as the recipe's 1024 -> 320
SQUARE_Y, SQUARE_X, SQUARE_SIDE = 96, 160, 64  # level-0 pixels, alone in its tiles
DISKS = [(420, 300, 40), (300, 560, 25), (520, 90, 50), (150, 620, 30)]  # (y, x, radius)


def structured_slide() -> tuple[np.ndarray, np.ndarray]:
    """A (3, y, x) uint8 image with stripes, gradients, texture and objects, and its (y, x) mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    pattern = 60 * np.sin(xx / 9) * np.cos(yy / 13) + 0.15 * (xx - yy)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.5)
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[SQUARE_Y : SQUARE_Y + SQUARE_SIDE, SQUARE_X : SQUARE_X + SQUARE_SIDE] = 1
    for y, x, r in DISKS:
        cv2.circle(mask, (x, y), r, 1, -1)
    image = np.stack([150 + pattern * k + texture - 70 * mask for k in (1.0, -0.6, 0.3)])
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    image, mask = structured_slide()
    path = tmp_path_factory.mktemp("loader") / "s1.zarr"
    write_slide_store(path, image, mask, chunk=128, min_level_size=128)
    return path, image, mask


@pytest.fixture(scope="module")
def tiles(slide):
    return build_tile_index(
        slide[0], "s1", TILE, TILE // 2, saturation_threshold=defaults("tiles")["saturation_threshold"]
    )


def rows(*origins, size=TILE):
    return pd.DataFrame({"slide": "s1", "y": [o[0] for o in origins], "x": [o[1] for o in origins], "size": size})


def normalised_zero():
    return (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)


def test_auto_level_is_the_coarsest_level_holding_the_input_size():
    assert auto_level(1024, 320, 5) == 1
    assert auto_level(1024, 512, 5) == 1
    assert auto_level(1024, 513, 5) == 0
    assert auto_level(4096, 320, 3) == 2  # capped by the levels the store has
    assert auto_level(256, 320, 4) == 0


def test_dataset_reads_images_from_the_auto_level(slide):
    store = SlideStore(slide[0])
    assert len(store.levels) == 4
    for input_size, level in [(80, 1), (64, 2), (32, 3), (200, 0)]:
        assert TileDataset(rows((0, 0)), {"s1": slide[0]}, input_size).image_level(store, TILE) == level


def test_item_shapes_dtypes_and_ranges(slide, tiles):
    augment = build_augmentations(RECIPE_AUGMENTATIONS)
    dataset = TileDataset(tiles, {"s1": slide[0]}, INPUT, augment, seed=1, epoch=0)
    low = normalised_zero()
    high = ((1 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).astype(np.float32)
    for index in range(len(tiles)):
        item = dataset[index]
        assert item["image"].shape == (3, INPUT, INPUT) and item["image"].dtype == torch.float32
        image = item["image"].numpy()
        assert np.all(image >= low[:, None, None] - 1e-5) and np.all(image <= high[:, None, None] + 1e-5)
        assert item["mask"].shape == (1, INPUT, INPUT) and item["mask"].dtype == torch.float32
        assert set(np.unique(item["mask"].numpy())) <= {0.0, 1.0}
        assert item["clf"].shape == () and item["clf"].dtype == torch.float32
        assert item["clf"].item() == float(item["mask"].any())
        assert (item["slide"], item["y"], item["x"]) == ("s1", tiles.y[index], tiles.x[index])


def test_level0_item_is_the_area_resized_window_normalised(slide):
    path, image, _ = slide
    item = TileDataset(rows((64, 128)), {"s1": path}, INPUT, level=0)[0]
    window = np.ascontiguousarray(image[:, 64 : 64 + TILE, 128 : 128 + TILE].transpose(1, 2, 0))
    expected = cv2.resize(window, (INPUT, INPUT), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    expected = ((expected - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)


def test_mask_of_a_known_square(slide):
    # The square spans tile pixels 32..96 of 256, i.e. 10..30 at 80 px.
    item = TileDataset(rows((64, 128)), {"s1": slide[0]}, INPUT)[0]
    expected = np.zeros((INPUT, INPUT), dtype=np.float32)
    expected[10:30, 10:30] = 1
    np.testing.assert_array_equal(item["mask"].numpy()[0], expected)
    assert item["clf"].item() == 1.0


def test_mask_is_thresholded_at_half_area(tmp_path):
    # A 6-px stripe on 256 -> 64 (4 px per output pixel): 4 + 2 px -> rows 1 (full) and 2 (half).
    image, _ = structured_slide()
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[4:10, :] = 1
    mask[:, 4:9] = 1  # 4 + 1 px -> column 1 only (a quarter of column 2 is below half)
    write_slide_store(tmp_path / "s1.zarr", image, mask, chunk=128, min_level_size=128)
    out = TileDataset(rows((0, 0)), {"s1": tmp_path / "s1.zarr"}, 64)[0]["mask"].numpy()[0]
    assert out[:, 1].all() and not out[5:, 2].any() and not out[5:, 0].any()
    assert out[1].all() and out[2].all() and not out[3, 5:].any() and not out[0, 5:].any()


@pytest.mark.parametrize("level", [0, "auto"])
def test_zero_fill_past_the_border(slide, level):
    # Rows 512..768 and columns 640..896: 88 rows and 60 columns inside, i.e. 27.5 and 18.75 at 80 px.
    item = TileDataset(rows((512, 640)), {"s1": slide[0]}, INPUT, level=level)[0]
    image, mask = item["image"].numpy(), item["mask"].numpy()[0]
    zero = normalised_zero()[:, None, None]
    np.testing.assert_allclose(image[:, 28:, :], np.broadcast_to(zero, (3, INPUT - 28, INPUT)), atol=1e-6)
    np.testing.assert_allclose(image[:, :, 19:], np.broadcast_to(zero, (3, INPUT, INPUT - 19)), atol=1e-6)
    assert not np.allclose(image[:, :27, :18], zero, atol=0.05)
    assert not mask[28:].any() and not mask[:, 19:].any()


def test_clf_follows_the_augmented_mask(slide):
    stores = {"s1": slide[0]}
    assert TileDataset(rows((64, 128)), stores, INPUT)[0]["clf"].item() == 1.0
    move_out = A.Compose([A.Affine(translate_px={"x": INPUT, "y": 0}, p=1.0)])
    item = TileDataset(rows((64, 128)), stores, INPUT, augment=move_out)[0]
    assert not item["mask"].any() and item["clf"].item() == 0.0


def test_level1_read_is_close_to_resizing_level0(slide, tiles):
    stores = {"s1": slide[0]}
    fine = TileDataset(tiles, stores, INPUT, level=0)
    coarse = TileDataset(tiles, stores, INPUT, level="auto")
    assert coarse.image_level(coarse.store("s1"), TILE) == 1
    differences, intersection, union = [], 0, 0
    for index in range(len(tiles)):
        (image0, mask0), (image1, mask1) = fine.read_tile(index), coarse.read_tile(index)
        differences.append(np.abs(image0.astype(np.int16) - image1).mean())
        intersection += np.sum(mask0 & mask1)
        union += np.sum(mask0 | mask1)
    assert np.mean(differences) < 1.0 and max(differences) < 2.0  # gray levels
    assert intersection / union > 0.95


def test_mask_area_column_skips_only_empty_masks(slide, tiles):
    stores = {"s1": slide[0]}
    assert (tiles.mask_area == 0).any() and (tiles.mask_area > 0).any()
    indexed = TileDataset(tiles, stores, INPUT)
    read = TileDataset(tiles.drop(columns="mask_area"), stores, INPUT)
    for index in range(len(tiles)):
        assert np.array_equal(indexed.read_tile(index)[1], read.read_tile(index)[1])


def collect(loader):
    return list(loader)


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=False):
        for key in ("image", "mask", "clf", "y", "x"):
            assert torch.equal(a[key], b[key]), key
        assert a["slide"] == b["slide"]


@pytest.fixture(scope="module")
def recipe_dataset(slide, tiles):
    return TileDataset(
        tiles.iloc[:12], {"s1": slide[0]}, INPUT, build_augmentations(RECIPE_AUGMENTATIONS), seed=5, epoch=2
    )


def loader(dataset, num_workers, context=None, seed=5, epoch=2):
    return make_loader(
        dataset,
        4,
        shuffle=True,
        num_workers=num_workers,
        device_type="cpu",
        seed=seed,
        epoch=epoch,
        multiprocessing_context=context,
    )


def test_batches_do_not_depend_on_worker_count(recipe_dataset):
    serial = collect(loader(recipe_dataset, 0))
    recipe_dataset[0]  # stores opened in the parent must not leak into forked workers
    assert_same_batches(serial, collect(loader(recipe_dataset, 2, "fork")))
    assert_same_batches(serial, collect(loader(recipe_dataset, 0)))


@pytest.mark.slow
def test_spawned_workers_open_their_own_stores(recipe_dataset):
    recipe_dataset[0]
    assert_same_batches(collect(loader(recipe_dataset, 0)), collect(loader(recipe_dataset, 2, "spawn")))


def test_seed_and_epoch_change_order_and_augmentations(recipe_dataset, slide, tiles):
    base = collect(loader(recipe_dataset, 0))
    other_epoch = collect(loader(recipe_dataset, 0, epoch=3))
    assert not all(torch.equal(a["y"], b["y"]) for a, b in zip(base, other_epoch, strict=False))
    augment = build_augmentations(RECIPE_AUGMENTATIONS)
    epoch2 = TileDataset(tiles.iloc[:4], {"s1": slide[0]}, INPUT, augment, seed=5, epoch=2)
    epoch3 = TileDataset(tiles.iloc[:4], {"s1": slide[0]}, INPUT, augment, seed=5, epoch=3)
    assert not torch.equal(epoch2[1]["image"], epoch3[1]["image"])
    assert torch.equal(epoch2[1]["image"], epoch2[1]["image"])


def test_pin_memory_only_for_cuda(recipe_dataset):
    assert make_loader(recipe_dataset, 2, False, 0, "cuda", 0, 0).pin_memory
    assert not make_loader(recipe_dataset, 2, False, 0, "cpu", 0, 0).pin_memory


def test_pickled_dataset_carries_no_open_store(recipe_dataset):
    recipe_dataset[0]
    assert recipe_dataset._stores
    copy = pickle.loads(pickle.dumps(recipe_dataset))
    assert copy._stores == {}
    assert torch.equal(copy[3]["image"], recipe_dataset[3]["image"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stores": {}}, "no slide store given for slide"),
        ({"level": -1}, "image level must be 'auto' or an integer"),
        ({"tiles": pd.DataFrame({"slide": ["s1"], "y": [0]})}, r"lacks column\(s\) x, size"),
        ({"stain": {"s2": ReinhardMap()}}, r"no stain normalisation given for slide\(s\) s1"),
    ],
)
def test_bad_arguments_raise_input_error(slide, kwargs, message):
    arguments = {"tiles": rows((0, 0)), "stores": {"s1": slide[0]}, "input_size": INPUT, **kwargs}
    with pytest.raises(InputError, match=message):
        TileDataset(**arguments)


def test_level_beyond_the_pyramid_names_the_store(slide):
    with pytest.raises(InputError, match=r"s1\.zarr: image level 7 requested; the store has 4"):
        TileDataset(rows((0, 0)), {"s1": slide[0]}, INPUT, level=7)[0]


def test_stain_normalisation_maps_each_slides_resized_tile_before_the_augmentations(slide):
    path = slide[0]
    mapping = ReinhardMap(scale=(1.2, 0.9, 1.1), offset=(0.05, -0.01, 0.005), glass_saturation=(0, 1))
    plain = TileDataset(rows((64, 128)), {"s1": path}, INPUT, level=0)
    image, _ = plain.read_tile(0)
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    normalised = TileDataset(rows((64, 128)), {"s1": path}, INPUT, augment=flip, level=0, stain={"s1": mapping})
    expected = (mapping.apply(image)[:, ::-1].astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(normalised[0]["image"].numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    assert not np.allclose(normalised[0]["image"].numpy(), plain[0]["image"].numpy()[:, :, ::-1], atol=0.1)
    identity = TileDataset(rows((64, 128)), {"s1": path}, INPUT, level=0, stain={"s1": ReinhardMap()})
    assert torch.equal(identity[0]["image"], plain[0]["image"])
