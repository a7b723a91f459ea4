"""Augmentation pipelines built from YAML-able specs (tilepipe.data.augment)."""

import warnings

import albumentations as A
import numpy as np
import pytest
import yaml

from tilepipe.data.augment import PRESETS, RECIPE_AUGMENTATIONS, StainJitter, build_augmentations, reseed
from tilepipe.data.stain import jitter_stains, stain_matrix
from tilepipe.errors import InputError


@pytest.fixture(scope="module")
def image_and_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    return image, mask


def test_recipe_builds_without_warnings_and_survives_yaml():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augment = build_augmentations(yaml.safe_load(yaml.safe_dump(RECIPE_AUGMENTATIONS)))
    assert [type(t).__name__ for t in augment.transforms] == [e["name"] for e in RECIPE_AUGMENTATIONS]
    assert augment.transforms[0].p == 1.0
    assert all(t.p == 0.5 for t in augment.transforms[1:])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_without_warnings_and_keeps_a_binary_mask(name, image_and_mask):
    image, mask = image_and_mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augment = build_augmentations(yaml.safe_load(yaml.safe_dump(PRESETS[name])), seed=3)
    out = augment(image=image, mask=mask)
    assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
    assert set(np.unique(out["mask"])) <= {0, 1}


def test_recipe_keeps_shape_dtype_and_binary_mask(image_and_mask):
    image, mask = image_and_mask
    augment = build_augmentations(RECIPE_AUGMENTATIONS, seed=3)
    for seed in range(20):
        reseed(augment, seed)
        out = augment(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        assert out["mask"].shape == mask.shape and set(np.unique(out["mask"])) <= {0, 1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            [{"name": "HorizontalFlip"}, {"name": "NoSuchTransform", "p": 1}],
            r"train\.augmentations\[1\]: unknown augmentation 'NoSuchTransform'",
        ),
        ([{"name": "Compose", "transforms": []}], r"train\.augmentations\[0\]: unknown augmentation 'Compose'"),
        (
            [{"name": "GaussianBlur", "blur_limt": [3, 7]}],
            r"train\.augmentations\[0\]: GaussianBlur takes no argument\(s\) blur_limt",
        ),
        (
            [{"name": "GaussianBlur", "blur_limit": "wide"}],
            r"train\.augmentations\[0\]: bad arguments for GaussianBlur",
        ),
        ([{"name": "HorizontalFlip", "p": 2.0}], r"train\.augmentations\[0\]: bad arguments for HorizontalFlip"),
        ([{"p": 0.5}], r"train\.augmentations\[0\]: expected a mapping with a 'name'"),
        ({"name": "HorizontalFlip"}, r"train\.augmentations: expected a list"),
    ],
)
def test_bad_specs_raise_input_error_naming_the_entry(spec, message):
    with pytest.raises(InputError, match=message):
        build_augmentations(spec)


def test_same_seed_same_output_different_seed_different_output(image_and_mask):
    image, mask = image_and_mask
    first = build_augmentations(RECIPE_AUGMENTATIONS, seed=7)(image=image, mask=mask)
    again = build_augmentations(RECIPE_AUGMENTATIONS, seed=7)(image=image, mask=mask)
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["mask"], again["mask"])
    outputs = {build_augmentations(RECIPE_AUGMENTATIONS, seed=s)(image=image)["image"].tobytes() for s in range(8)}
    assert len(outputs) == 8


def test_reseed_gives_transforms_independent_coin_flips(image_and_mask):
    image, _ = image_and_mask
    augment = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    applied_counts = []
    for seed in range(200):
        reseed(augment, seed)
        applied_counts.append(len(augment(image=image)["applied_transforms"]))
    # Independent flips: one of the two is applied about half the time.
    assert 0.35 < np.mean(np.array(applied_counts) == 1) < 0.65


@pytest.mark.parametrize("side", [320, 640])
def test_recipe_dropout_holes_scale_with_the_input(side):
    dropout = next(e for e in RECIPE_AUGMENTATIONS if e["name"] == "CoarseDropout")
    augment = build_augmentations([{**dropout, "p": 1.0}], seed=0)
    image = np.full((side, side, 3), 200, dtype=np.uint8)
    for seed in range(10):
        reseed(augment, seed)
        holes = augment(image=image)["image"][..., 0] == 0
        rows, cols = np.flatnonzero(holes.any(1)), np.flatnonzero(holes.any(0))
        # The recipe's holes are 20-80 px at 320 px input (1/16 to 1/4 of the side).
        assert holes.sum() >= (side // 16) ** 2
        assert min(rows.size, cols.size) >= side // 16 and holes.sum() <= 2 * (side // 4) ** 2


def test_stain_jitter_is_named_like_albumentations_transforms_and_presets_expand_in_lists(image_and_mask):
    image, mask = image_and_mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augment = build_augmentations(yaml.safe_load(yaml.safe_dump(["light", {"name": "StainJitter", "p": 1.0}])))
    names = [type(t).__name__ for t in augment.transforms]
    assert names == [e["name"] for e in PRESETS["light"]] + ["StainJitter"]
    jitter = augment.transforms[-1]
    assert isinstance(jitter, StainJitter) and jitter.stains == "h_pas" and jitter.p == 1.0
    assert (jitter.scale_range, jitter.shift_range) == ((0.95, 1.05), (-0.05, 0.05))
    out = augment(image=image, mask=mask)
    assert out["image"].dtype == np.uint8 and out["image"].shape == image.shape


def test_stain_jitter_is_deterministic_with_a_seed_and_draws_within_its_ranges(image_and_mask):
    image, _ = image_and_mask
    spec = [{"name": "StainJitter", "scale_range": [0.8, 1.2], "shift_range": [-0.1, 0.1], "p": 1.0}]
    first = build_augmentations(spec, seed=11)(image=image)["image"]
    assert np.array_equal(first, build_augmentations(spec, seed=11)(image=image)["image"])
    assert len({build_augmentations(spec, seed=s)(image=image)["image"].tobytes() for s in range(6)}) == 6
    jitter = build_augmentations(spec, seed=0).transforms[0]
    for _ in range(50):
        params = jitter.get_params()
        assert all(0.8 <= v <= 1.2 for v in params["scale"]) and all(-0.1 <= v <= 0.1 for v in params["shift"])
    params = jitter.get_params()
    assert np.array_equal(jitter.apply(image, **params), jitter_stains(image, stain_matrix("h_pas"), **params))


def test_stain_jitter_without_jitter_is_the_identity(image_and_mask):
    image, _ = image_and_mask
    spec = [{"name": "StainJitter", "stains": "h_e", "scale_range": [1, 1], "shift_range": [0, 0], "p": 1.0}]
    assert np.array_equal(build_augmentations(spec, seed=2)(image=image)["image"], image)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "StainJitter", "stains": "h_dab"}, r"bad arguments for StainJitter: unknown stains 'h_dab'"),
        ({"name": "StainJitter", "scale_range": [1.1, 0.9]}, r"bad arguments for StainJitter: scale_range"),
        ({"name": "StainJitter", "stains": [[1, 0, 0], [2, 0, 0]]}, r"nearly\) parallel"),
        ({"name": "StainJitter", "sigma": 0.1}, r"StainJitter takes no argument\(s\) sigma"),
        ("lite", r"expected a mapping with a 'name' or a preset \(recipe, light\), got 'lite'"),
    ],
)
def test_bad_stain_jitter_entries_raise_input_error(entry, message):
    with pytest.raises(InputError, match=message):
        build_augmentations([entry])
