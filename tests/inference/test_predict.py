"""Whole-slide inference: window geometry (tilepipe.inference.windows) and centre-crop stitching (tilepipe.inference.predict)."""

import itertools

import numpy as np
import pytest
import torch
import zarr
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image_label import ImageLabel
from torch import nn

from tests.builders import write_slide_store
from tilepipe.config import defaults
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tilepipe.errors import InputError
from tilepipe.inference.predict import predict_slide
from tilepipe.inference.settings import prediction_settings
from tilepipe.inference.windows import centre_grid, choose_read_level, choose_tissue_level
from tilepipe.model import build_model
from tilepipe.stores.ngff import mean_2x2_yx
from tilepipe.stores.probability import read_probability
from tilepipe.stores.slide import SlideStore, read_window

ALL_FLIPS = ["none", "hflip", "vflip", "hvflip"]
GLASS = (236, 234, 240)  # HSV saturation 6: background
PINK = (215, 140, 185)  # saturation 89: tissue

# The schema's prediction settings on the CPU; each test overrides what it is about.
BASE_SETTINGS = {
    **prediction_settings(defaults()),
    "batch_size": defaults("inference")["batch_size"],
    "device": "cpu",
    "amp": False,
    "progress": False,
}


def predict(store, out, models, **settings):
    """``predict_slide`` with :data:`BASE_SETTINGS` under ``settings``."""
    return predict_slide(store, out, models, **{**BASE_SETTINGS, **settings})


class PixelModel(nn.Module):
    """Stand-in network: each pixel's probability is its own red value / 255; counts the windows it sees.

    The encoder passes the (normalised) image through; ``classify`` returns
    the logit of ``clf_probability(red)`` where ``red`` is the (b, S, S)
    red channel in 0..1 (default: always 1).
    """

    has_classifier = True

    def __init__(self, clf_probability=None):
        super().__init__()
        self.clf_probability = clf_probability or (lambda red: torch.ones(red.shape[0]))
        self.encoded = self.classified = self.segmented = 0

    @staticmethod
    def red(features: list[torch.Tensor]) -> torch.Tensor:
        return features[0][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]

    def encode(self, x):
        self.encoded += x.shape[0]
        return [x]

    def classify(self, features):
        self.classified += features[0].shape[0]
        return torch.logit(self.clf_probability(self.red(features)).clamp(1e-6, 1 - 1e-6))[:, None]

    def segment(self, features):
        self.segmented += features[0].shape[0]
        return torch.logit(self.red(features).clamp(1e-6, 1 - 1e-6))[:, None]


def slide_store(tmp_path, image, name="slide.zarr"):
    path = tmp_path / name
    write_slide_store(path, image, chunk=32, min_level_size=16)
    return path


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8)


def coverage(height, width, tile_size, keep):
    """Return how often each pixel lies in a kept centre, checking each window against its centre."""
    grid = centre_grid(height, width, tile_size=tile_size, keep=keep)
    counts = np.zeros((height, width), dtype=np.int64)
    for row in range(grid.rows):
        windows = grid.row(row)
        assert len(windows) == grid.cols
        for w in windows:
            assert (w.centre_y - w.y, w.centre_x - w.x) == (grid.margin, grid.margin)
            assert grid.margin + w.centre_height <= tile_size and grid.margin + w.centre_width <= tile_size
            counts[w.centre_y : w.centre_y + w.centre_height, w.centre_x : w.centre_x + w.centre_width] += 1
    return counts


@pytest.mark.parametrize(
    ("height", "width", "tile_size", "keep"),
    [
        (1, 1, 1024, 512),
        (300, 200, 1024, 512),
        (1024, 1536, 1024, 512),
        (1025, 513, 1024, 512),
        (97, 130, 64, 32),
        (50, 51, 7, 3),
        (40, 33, 8, 8),
        (9, 11, 5, 1),
    ],
)
def test_every_pixel_lies_in_exactly_one_kept_centre(height, width, tile_size, keep):
    assert (coverage(height, width, tile_size, keep) == 1).all()


def test_recipe_windows_start_a_quarter_window_before_their_centres():
    grid = centre_grid(1500, 2100, tile_size=1024, keep=512)
    first, second = grid.row(0)[:2]
    assert (grid.rows, grid.cols, grid.margin) == (3, 5, 256)
    assert (first.y, first.x, second.x) == (-256, -256, 256)
    assert grid.row(2)[-1].centre_height == 1500 - 1024 and grid.row(2)[-1].centre_width == 2100 - 2048


def test_bad_geometry_is_an_input_error():
    with pytest.raises(InputError, match="keep"):
        centre_grid(100, 100, tile_size=64, keep=128)
    with pytest.raises(InputError, match="nothing to predict"):
        centre_grid(0, 100, tile_size=64, keep=32)


def test_read_level_is_the_training_level_lowered_to_whole_pixels():
    recipe = centre_grid(5000, 5000, tile_size=1024, keep=512)
    assert choose_read_level(recipe, 320, 6) == 1  # 1024 -> 512 px read, resized to 320
    assert choose_read_level(recipe, 256, 6) == 2
    assert choose_read_level(recipe, 1024, 6) == 0
    odd_margin = centre_grid(500, 500, tile_size=64, keep=30)  # margin 17: only level 0 is whole
    assert choose_read_level(odd_margin, 16, 4) == 0
    assert choose_read_level(recipe, 320, 6, read_level=2) == 2
    with pytest.raises(InputError, match="does not divide"):
        choose_read_level(odd_margin, 16, 4, read_level=1)
    with pytest.raises(InputError, match="read_level"):
        choose_read_level(recipe, 320, 2, read_level=3)


def test_tissue_level_has_about_32_pixels_per_centre_side():
    assert choose_tissue_level(512, 6) == 4
    assert choose_tissue_level(512, 3) == 2
    assert choose_tissue_level(96, 6) == 2  # 24 px per side
    assert choose_tissue_level(24, 6) == 0
    assert choose_tissue_level(33, 6) == 0  # only level 0 divides an odd centre


@pytest.mark.parametrize(("height", "width"), [(20, 30), (97, 130), (64, 96)])
@pytest.mark.parametrize("tta", [["none"], ALL_FLIPS, ["hflip"]])
def test_stitching_gives_every_pixel_its_own_prediction(tmp_path, height, width, tta):
    image = random_image(height, width)
    out = tmp_path / "pred.zarr"
    stats = predict(
        slide_store(tmp_path, image),
        out,
        [PixelModel()],
        tile_size=64,
        keep=32,
        input_size=64,
        read_level=0,
        tta=tta,
        clf_threshold=None,
        min_tissue=None,
        batch_size=3,
    )
    probability = read_probability(out)
    assert probability.dtype == np.uint8 and probability.shape == (height, width)
    np.testing.assert_array_equal(probability[...], image[0])
    n_windows = -(-height // 32) * -(-width // 32)
    assert stats["windows"] == stats["segmented"] == n_windows


def test_resized_windows_reproduce_a_smooth_ramp(tmp_path):
    height, width = 150, 230
    yy, xx = np.mgrid[0:height, 0:width]
    red = np.rint(20 + 200 * (0.6 * xx / width + 0.4 * yy / height)).astype(np.uint8)
    image = np.stack([red, np.full_like(red, 90), np.full_like(red, 160)])
    out = tmp_path / "pred.zarr"
    predict(
        slide_store(tmp_path, image),
        out,
        [PixelModel()],
        tile_size=64,
        keep=32,
        input_size=24,
        tta=ALL_FLIPS,
        clf_threshold=None,
        min_tissue=None,
    )
    assert zarr.open_group(out, mode="r").attrs["tilepipe"]["read_level"] == 1
    inner = (slice(2, -2), slice(2, -2))  # the slide's own border meets the zero fill when resized
    error = np.abs(read_probability(out)[...].astype(int) - red)[inner]
    assert error.max() <= 2


def test_output_store_layout_and_metadata(tmp_path):
    """A label image of its slide: array "0" at level 0, the slide's levels as 2x2 means, the slide named."""
    out = tmp_path / "predictions" / "abc.zarr"
    slide = slide_store(tmp_path, random_image(70, 90))
    predict(
        slide,
        out,
        [PixelModel()],
        tile_size=32,
        keep=16,
        input_size=32,
        tta=["none"],
        clf_threshold=None,
        min_tissue=None,
    )
    group = zarr.open_group(out, mode="r")
    probability = read_probability(out)
    assert probability.chunks == (16, 16)
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [axis["name"] for axis in multiscale["axes"]] == ["y", "x"]
    levels = [group[d["path"]] for d in multiscale["datasets"]]
    assert (
        [level.shape for level in levels] == SlideStore(slide).level_shapes == [(70, 90), (35, 45), (18, 23), (9, 12)]
    )
    assert multiscale["datasets"][0]["path"] == "0" and multiscale["type"] == "2x2 mean"
    for finer, coarser in itertools.pairwise(levels):
        np.testing.assert_array_equal(coarser[...], mean_2x2_yx(finer[...]))
    source = group.attrs["ome"]["image-label"]["source"]["image"]
    assert source == "../../slide.zarr" and (out / source).resolve() == slide.resolve()
    assert isinstance(open_ome_zarr(group), ImageLabel)  # valid NGFF 0.5 (tests/stores/test_ngff_validity.py)
    info = group.attrs["tilepipe"]
    assert info["content"] == "probability" and info["tile_size"] == 32 and info["keep"] == 16
    assert sorted(p.name for p in out.parent.iterdir()) == ["abc.zarr"]  # no temporary left behind


def test_windows_below_the_classification_threshold_skip_the_decoder(tmp_path):
    height, width, tile, keep = 128, 160, 64, 32
    image = random_image(height, width)
    image[0, :, :70] = 250  # bright red on the left: those windows pass the gate
    image[0, :, 70:] //= 4
    models = [PixelModel(lambda red: (red.mean(dim=(1, 2)) > 0.5).float()) for _ in range(2)]
    out = tmp_path / "pred.zarr"
    stats = predict(
        slide_store(tmp_path, image),
        out,
        models,
        tile_size=tile,
        keep=keep,
        input_size=tile,
        read_level=0,
        tta=["none", "vflip"],
        clf_threshold=0.5,
        min_tissue=None,
        batch_size=4,
    )
    grid = centre_grid(height, width, tile_size=tile, keep=keep)
    windows = [w for row in range(grid.rows) for w in grid.row(row)]
    passes = [read_window(image[0], w.y, w.x, tile, tile).mean() / 255 > 0.5 for w in windows]
    assert 0 < sum(passes) < len(windows)
    assert stats["segmented"] == sum(passes) and stats["skipped_classifier"] == len(windows) - sum(passes)
    for model in models:
        assert model.encoded == model.classified == 2 * len(windows)
        assert model.segmented == 2 * sum(passes)  # decoder runs only for windows that pass, once per flip
    probability = read_probability(out)[...]
    for window, passed in zip(windows, passes, strict=False):
        centre = (
            slice(window.centre_y, window.centre_y + window.centre_height),
            slice(window.centre_x, window.centre_x + window.centre_width),
        )
        np.testing.assert_array_equal(probability[centre], image[0][centre] if passed else 0)


def test_the_gate_averages_the_classifier_over_models(tmp_path):
    store = slide_store(tmp_path, random_image(64, 64))
    sure = PixelModel(lambda red: torch.full(red.shape[:1], 0.9))
    unsure = PixelModel(lambda red: torch.zeros(red.shape[0]))
    common = {
        "tile_size": 64,
        "keep": 32,
        "input_size": 64,
        "tta": ["none"],
        "min_tissue": None,
        "device": "cpu",
        "progress": False,
    }
    assert predict(store, tmp_path / "a.zarr", [sure, unsure], clf_threshold=0.5, **common)["segmented"] == 0
    assert predict(store, tmp_path / "b.zarr", [sure, unsure], clf_threshold=0.45, **common)["segmented"] == 4
    assert predict(store, tmp_path / "c.zarr", [sure], clf_threshold=0.5, **common)["segmented"] == 4


def test_background_windows_never_reach_the_model(tmp_path):
    height, width, tissue_width = 200, 300, 150
    image = np.empty((3, height, width), dtype=np.uint8)
    image[:] = np.array(GLASS, dtype=np.uint8)[:, None, None]
    image[:, :, :tissue_width] = np.array(PINK, dtype=np.uint8)[:, None, None]
    model = PixelModel()
    out = tmp_path / "pred.zarr"
    stats = predict(
        slide_store(tmp_path, image),
        out,
        [model],
        tile_size=128,
        keep=64,
        input_size=128,
        read_level=0,
        tta=["none"],
        clf_threshold=None,
    )
    rows, tissue_cols = -(-height // 64), -(-tissue_width // 64)  # centres from x = 0, 64, 128 hold tissue
    assert model.encoded == rows * tissue_cols == stats["segmented"]
    assert stats["skipped_background"] == rows * (-(-width // 64) - tissue_cols)
    probability = read_probability(out)[...]
    np.testing.assert_array_equal(probability[:, : tissue_cols * 64], image[0][:, : tissue_cols * 64])
    assert not probability[:, tissue_cols * 64 :].any()


class Failing(PixelModel):
    def segment(self, features):
        raise RuntimeError("out of memory")


def test_a_failed_run_leaves_no_output(tmp_path):
    out = tmp_path / "pred.zarr"
    with pytest.raises(RuntimeError, match="out of memory"):
        predict(
            slide_store(tmp_path, random_image(64, 64)),
            out,
            [Failing()],
            tile_size=32,
            input_size=32,
            tta=["none"],
            clf_threshold=None,
            min_tissue=None,
        )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["slide.zarr"]


def test_bad_arguments_are_input_errors(tmp_path):
    store = slide_store(tmp_path, random_image(40, 40))
    common = {"tile_size": 32, "input_size": 32, "device": "cpu", "progress": False}
    with pytest.raises(InputError, match="tta"):
        predict(store, tmp_path / "p.zarr", [PixelModel()], tta=["rot90"], **common)
    with pytest.raises(InputError, match="tta"):
        predict(store, tmp_path / "p.zarr", [PixelModel()], tta=[], **common)
    with pytest.raises(InputError, match="no models"):
        predict(store, tmp_path / "p.zarr", [], **common)
    headless = build_model({"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8, "clf_head": False})
    with pytest.raises(InputError, match="no classification head"):
        predict(store, tmp_path / "p.zarr", [headless], clf_threshold=0.5, **common)
    with pytest.raises(InputError, match="does not exist"):
        predict(tmp_path / "missing.zarr", tmp_path / "p.zarr", [PixelModel()], **common)
    assert not (tmp_path / "p.zarr").exists()


def test_the_recipe_network_runs_gated_with_flips_and_is_deterministic(tmp_path):
    torch.manual_seed(0)
    settings = {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8}
    models = [build_model(settings), build_model(settings)]
    store = slide_store(tmp_path, random_image(100, 110))
    common = {
        "tile_size": 128,
        "input_size": 64,
        "tta": ["none", "hvflip"],
        "min_tissue": None,
        "batch_size": 4,
        "device": "cpu",
        "progress": False,
    }
    stats = predict(store, tmp_path / "a.zarr", models, clf_threshold=0.0, **common)
    predict(store, tmp_path / "b.zarr", models, clf_threshold=0.0, **common)
    assert stats["segmented"] == stats["windows"] == 4
    first, second = read_probability(tmp_path / "a.zarr")[...], read_probability(tmp_path / "b.zarr")[...]
    np.testing.assert_array_equal(first, second)
    assert first.std() > 0
    stats = predict(store, tmp_path / "c.zarr", models, clf_threshold=1.0, **common)
    assert stats["skipped_classifier"] == 4 and not read_probability(tmp_path / "c.zarr")[...].any()


def test_a_slide_at_another_resolution_is_predicted_with_resampled_windows(tmp_path):
    """Models of 0.5 um pixels on a 0.26 um slide: 124 px windows (not a power of two), output at slide size."""
    from tilepipe.inference.settings import with_geometry

    geometry = {"tile_size": 64, "input_size": 24, "read_level": "auto", "mpp": 0.5, "mean": None, "std": None}
    settings = {**BASE_SETTINGS, "tile_size": 64, "input_size": 24, "read_level": "auto"}
    settings, changes = with_geometry(settings, {**geometry, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, 0.26)
    assert settings["tile_size"] == 124 and len(changes) == 1
    height, width = 301, 257
    yy, xx = np.mgrid[0:height, 0:width]
    red = np.rint(20 + 200 * (0.6 * xx / width + 0.4 * yy / height)).astype(np.uint8)
    image = np.stack([red, np.full_like(red, 90), np.full_like(red, 160)])
    out = tmp_path / "pred.zarr"
    predict_slide(slide_store(tmp_path, image), out, [PixelModel()], **{**settings, "tta": ALL_FLIPS})
    probability = read_probability(out)[...]
    assert probability.shape == (height, width)
    inner = (slice(10, -10), slice(10, -10))  # the zero fill past the border, blurred by the 5x resize
    assert np.abs(probability.astype(int) - red)[inner].max() <= 3
