"""What a prediction keeps beside the probability: the ensemble's spread (label group ``uncertainty``) and the window table."""

import numpy as np
import pandas as pd
import torch
import zarr
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image_label import ImageLabel

from tests.inference.test_predict import GLASS, PINK, PixelModel, predict, random_image, slide_store
from tilepipe.inference.predict import WINDOW_COLUMNS
from tilepipe.inference.windows import centre_grid
from tilepipe.stores.probability import read_probability, read_uncertainty, write_probability
from tilepipe.stores.slide import read_window


class ChannelModel(PixelModel):
    """Each pixel's probability is one of its channels / 255."""

    def __init__(self, channel, clf_probability=None):
        super().__init__(clf_probability)
        self.channel = channel

    def segment(self, features):
        from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

        value = features[0][:, self.channel] * IMAGENET_STD[self.channel] + IMAGENET_MEAN[self.channel]
        return torch.logit(value.clamp(1e-6, 1 - 1e-6))[:, None]


class Headless(PixelModel):
    has_classifier = False

    def classify(self, features):
        raise AssertionError("a headless model is never asked to classify")


def exact_geometry(**settings):
    """Windows read at level 0 and fed at their own size: no resampling blurs the expected maps."""
    return {"tile_size": 64, "keep": 32, "input_size": 64, "read_level": 0, "min_tissue": None, **settings}


def test_the_spread_of_two_members_is_twice_their_standard_deviation(tmp_path):
    """Two members p1 and p2: sigma = |p1 - p2| / 2, so the stored spread is round(|p1 - p2| * 255)."""
    image = random_image(90, 100, seed=3)
    out = tmp_path / "results" / "predictions" / "s.zarr"
    predict(
        slide_store(tmp_path, image),
        out,
        [ChannelModel(0), ChannelModel(1)],
        **exact_geometry(tta=["none", "hflip"], clf_threshold=None),
    )
    red, green = image[0].astype(int), image[1].astype(int)
    probability, spread = read_probability(out)[...].astype(int), read_uncertainty(out)[...].astype(int)
    assert np.abs(probability - (red + green) / 2).max() <= 1
    assert np.abs(spread - np.abs(red - green)).max() <= 1
    assert spread.std() > 50  # random channels: the members disagree a lot, and unevenly


def test_one_member_and_one_flip_has_no_spread_and_stores_no_chunk(tmp_path):
    out = tmp_path / "p.zarr"
    predict(slide_store(tmp_path, random_image(70, 70)), out, [PixelModel()], **exact_geometry(tta=["none"]))
    spread = read_uncertainty(out)
    assert spread.shape == (70, 70) and not spread[...].any()
    assert spread.nchunks_initialized == 0


def test_the_spread_is_a_label_image_of_the_slide_with_the_slides_pixel_size(tmp_path):
    results = tmp_path / "results"
    (results / "slides").mkdir(parents=True)
    slide = slide_store(results / "slides", random_image(70, 90), name="s.zarr")
    out = results / "predictions" / "stage1" / "s.zarr"
    predict(slide, out, [ChannelModel(0), ChannelModel(2)], **exact_geometry(tta=["none"], clf_threshold=None))
    group = zarr.open_group(out / "uncertainty", mode="r")
    model = open_ome_zarr(group)
    assert isinstance(model, ImageLabel)
    source = model.attributes.ome.image_label.source.image
    assert source == "../../../../slides/s.zarr" and (out / "uncertainty" / source).resolve() == slide.resolve()
    assert isinstance(open_ome_zarr(zarr.open_group(out, mode="r")), ImageLabel)  # the root stays valid
    root_scales = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    assert group.attrs["ome"]["multiscales"][0]["datasets"] == root_scales
    assert group.attrs["tilepipe"]["content"] == "uncertainty"


def test_the_window_table_records_tissue_classifier_and_gate(tmp_path):
    """Background windows: no clf; gated windows: clf below the threshold and not segmented; the rest segmented."""
    height, width = 128, 192
    image = random_image(height, width, seed=5)
    image[:, :, 128:] = np.array(GLASS, dtype=np.uint8)[:, None, None]  # centres from x = 128 are glass
    image[:, :64, :128] = np.array(PINK, dtype=np.uint8)[:, None, None]  # pink tissue, red 215: passes
    image[0, 64:, :128] //= 8  # dark red tissue below: the classifier says no
    image[1:, 64:, :128] = 200
    models = [PixelModel(lambda red: red.mean(dim=(1, 2)))]
    out, table_path = tmp_path / "p.zarr", tmp_path / "p.windows.csv"
    stats = predict(
        slide_store(tmp_path, image),
        out,
        models,
        **exact_geometry(tta=["none"], clf_threshold=0.5, min_tissue=0.0),
        windows_path=table_path,
    )
    table = pd.read_csv(table_path)
    assert list(table.columns) == WINDOW_COLUMNS
    grid = centre_grid(height, width, tile_size=64, keep=32)
    assert len(table) == len(grid) == stats["windows"]
    windows = [w for row in range(grid.rows) for w in grid.row(row)]
    assert table[["centre_y", "centre_x"]].values.tolist() == [[w.centre_y, w.centre_x] for w in windows]
    background = table["centre_x"] >= 128
    assert (table.loc[background, "tissue"] == 0).all() and table.loc[background, "clf"].isna().all()
    assert (table.loc[~background, "tissue"] > 0).all()
    expected_clf = [read_window(image[0], w.y, w.x, 64, 64).mean() / 255 for w in windows]
    tissue = table[~background]
    np.testing.assert_allclose(tissue["clf"], np.array(expected_clf)[~background.to_numpy()], atol=1e-5)
    assert (tissue["segmented"] == (tissue["clf"] >= 0.5)).all()
    assert 0 < tissue["segmented"].sum() < len(tissue)
    assert table["segmented"].sum() == stats["segmented"] and not table.loc[background, "segmented"].any()
    probability = read_probability(out)[...]
    for w, segmented in zip(windows, table["segmented"], strict=True):
        centre = probability[w.centre_y : w.centre_y + w.centre_height, w.centre_x : w.centre_x + w.centre_width]
        assert centre.any() == bool(segmented)


def test_without_a_gate_the_classifier_is_still_recorded_and_every_window_segmented(tmp_path):
    model = PixelModel(lambda red: torch.full(red.shape[:1], 0.25))
    table_path = tmp_path / "w.csv"
    predict(
        slide_store(tmp_path, random_image(64, 96)),
        tmp_path / "p.zarr",
        [model],
        **exact_geometry(tta=["none", "vflip"], clf_threshold=None),
        windows_path=table_path,
    )
    table = pd.read_csv(table_path)
    assert table["segmented"].all() and np.allclose(table["clf"], 0.25) and table["tissue"].isna().all()
    assert model.segmented == model.classified == 2 * len(table)


def test_headless_models_leave_the_classifier_column_empty(tmp_path):
    table_path = tmp_path / "w.csv"
    predict(
        slide_store(tmp_path, random_image(64, 64)),
        tmp_path / "p.zarr",
        [Headless()],
        **exact_geometry(tta=["none"], clf_threshold=None),
        windows_path=table_path,
    )
    table = pd.read_csv(table_path)
    assert table["clf"].isna().all() and table["segmented"].all()


def test_stores_without_a_spread_read_as_none(tmp_path):
    write_probability(tmp_path / "old.zarr", np.zeros((8, 8), np.uint8), chunk=8)
    assert read_uncertainty(tmp_path / "old.zarr") is None
