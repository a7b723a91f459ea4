"""Prediction with the models' stain normalisation: each slide's windows mapped to the training slides' colours."""

import numpy as np
import zarr

from tests.builders import write_slide_store
from tests.data.test_stain import GLASS, pas_tile, tissue_slide
from tests.inference.test_predict import BASE_SETTINGS, PixelModel
from tilepipe.data.stain import (
    ReinhardMap,
    fit_reference,
    normalisation_settings,
    slide_lab_stats,
    slide_map,
)
from tilepipe.inference.predict import predict_slide
from tilepipe.stores.probability import read_probability
from tilepipe.stores.slide import SlideStore

# Windows read at level 0 and not resized: the PixelModel's probability is each pixel's red value.
SETTINGS = {
    **BASE_SETTINGS,
    "tile_size": 64,
    "input_size": 64,
    "read_level": 0,
    "tta": ["none"],
    "clf_threshold": None,
    "min_tissue": None,
}


def store(tmp_path, name, image_cyx):
    write_slide_store(tmp_path / name, image_cyx, chunk=64, min_level_size=64)
    return tmp_path / name


def fitted_on(path) -> dict:
    return normalisation_settings(fit_reference({"ref": slide_lab_stats(SlideStore(path), 30, 1)}, 30, 1))


def predicted_red(path, out, **settings) -> np.ndarray:
    predict_slide(path, out, [PixelModel()], **{**SETTINGS, **settings})
    return read_probability(out)[...]


def test_every_window_of_a_slide_is_mapped_by_the_slides_map(tmp_path):
    tile = pas_tile()
    stain = fitted_on(store(tmp_path, "ref.zarr", tissue_slide(tile)))
    other = tissue_slide(ReinhardMap(scale=(1.1, 1.15, 0.9), offset=(-0.06, -0.01, 0.01)).apply(tile))
    path = store(tmp_path, "other.zarr", other)
    plain = predicted_red(path, tmp_path / "plain.zarr")
    assert np.abs(plain.astype(int) - other[0]).max() <= 1  # the stand-in model: probability = red
    normalised = predicted_red(path, tmp_path / "normalised.zarr", stain=stain)
    mapping = slide_map(SlideStore(path), stain)
    expected = mapping.apply(other.transpose(1, 2, 0))[..., 0]
    assert np.abs(normalised.astype(int) - expected).max() <= 1
    tissue = (slice(100, 420), slice(80, 560))
    assert np.abs(normalised[tissue].astype(int) - tissue_slide(tile)[0][tissue]).mean() < 1  # the reference's red
    assert (normalised[:50] == GLASS[0]).all()  # glass kept
    attrs = zarr.open_group(tmp_path / "normalised.zarr", mode="r").attrs["tilepipe"]
    assert attrs["stain"]["method"] == "reinhard"
    assert attrs["stain"]["slide_map"]["scale"] == list(mapping.scale)
    assert "stain" not in zarr.open_group(tmp_path / "plain.zarr", mode="r").attrs["tilepipe"]


def test_a_slide_like_the_reference_predicts_exactly_as_without_normalisation(tmp_path):
    path = store(tmp_path, "ref.zarr", tissue_slide(pas_tile()))
    plain = predicted_red(path, tmp_path / "plain.zarr")
    np.testing.assert_array_equal(predicted_red(path, tmp_path / "same.zarr", stain=fitted_on(path)), plain)
