"""Stain colour (tilepipe.data.stain): stain jitter in optical density, Reinhard normalisation to the training slides."""

import json

import numpy as np
import pytest

from tests.builders import write_slide_store
from tilepipe.data.stain import _BAND_ROWS as BAND_ROWS
from tilepipe.data.stain import (
    STAIN_VECTORS,
    LabStats,
    ReinhardMap,
    fit_reference,
    jitter_stains,
    jitter_transform,
    lab_from_rgb,
    normalisation_settings,
    optical_density,
    read_reference,
    rgb_from_lab,
    sample_bands,
    slide_lab_stats,
    slide_map,
    stain_matrix,
    stats_downsample,
    stats_level,
    write_reference,
)
from tilepipe.data.tissue import tissue_mask
from tilepipe.errors import InputError
from tilepipe.stores.slide import SlideStore

THRESHOLD = 30  # tiles.saturation_threshold's default
GLASS = (236, 232, 240)  # HSV saturation 8: not tissue


def every_value_image() -> np.ndarray:
    """A (256, 256, 3) uint8 image in which every channel takes every value, in varied combinations."""
    yy, xx = np.mgrid[0:256, 0:256]
    return np.stack([yy, xx, (yy * 7 + xx * 13) % 256], axis=-1).astype(np.uint8)


def pas_tile(seed: int = 0, side: int = 96) -> np.ndarray:
    """A (side, side, 3) uint8 H&PAS-like image: concentrations of the two stains, a little residual."""
    rng = np.random.default_rng(seed)
    matrix = stain_matrix("h_pas")
    concentrations = np.stack(
        [rng.uniform(0.1, 0.9, (side, side)), rng.uniform(0.1, 0.9, (side, side)), rng.normal(0, 0.02, (side, side))],
        axis=-1,
    )
    return np.clip(np.rint(256 * np.exp(-concentrations @ matrix) - 1), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ stain jitter


@pytest.mark.parametrize("stains", sorted(STAIN_VECTORS))
def test_stain_matrix_rows_are_unit_and_the_residual_is_orthogonal_to_both_stains(stains):
    matrix = stain_matrix(stains)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1)
    assert abs(matrix[2] @ matrix[0]) < 1e-12 and abs(matrix[2] @ matrix[1]) < 1e-12
    assert np.allclose(matrix[:2] * np.linalg.norm(STAIN_VECTORS[stains], axis=1, keepdims=True), STAIN_VECTORS[stains])


@pytest.mark.parametrize(
    "stains", ["h_dab", [[1, 0, 0]], [[1, 0, 0], [2, 0, 0]], [[1, 0, 0], [0, 0, 0]], [[1, -0.1, 0], [0, 1, 0]]]
)
def test_bad_stains_are_refused(stains):
    with pytest.raises(ValueError):
        stain_matrix(stains)


@pytest.mark.parametrize("stains", sorted(STAIN_VECTORS))
def test_zero_jitter_is_the_identity_on_every_value(stains):
    image = every_value_image()
    assert np.array_equal(jitter_stains(image, stain_matrix(stains), (1.0, 1.0), (0.0, 0.0)), image)
    transform, offset = jitter_transform(stain_matrix(stains), (1.0, 1.0), (0.0, 0.0))
    assert np.array_equal(transform, np.eye(3)) and np.array_equal(offset, np.zeros(3))


@pytest.mark.parametrize(("scale", "shift"), [((1.05, 0.9), (0.03, -0.05)), ((0.5, 1.8), (-0.2, 0.4))])
def test_jitter_scales_and_shifts_the_two_stains_and_keeps_the_residual(scale, shift):
    matrix = stain_matrix("h_pas")
    od = np.random.default_rng(1).uniform(0, 3, (1000, 3))
    transform, offset = jitter_transform(matrix, scale, shift)
    before, after = od @ np.linalg.inv(matrix), (od @ transform + offset) @ np.linalg.inv(matrix)
    assert np.allclose(after[:, :2], before[:, :2] * np.array(scale) + np.array(shift), atol=1e-12)
    assert np.allclose(after[:, 2], before[:, 2], atol=1e-12)  # the change lies in the plane of the two stains


def test_jitter_of_an_image_stays_in_the_stain_plane_up_to_rounding():
    matrix = stain_matrix("h_pas")
    image = pas_tile()
    scale, shift = (1.04, 0.96), (0.02, -0.03)
    out = jitter_stains(image, matrix, scale, shift)
    inside = np.all((image > 10) & (image < 245) & (out > 10) & (out < 245), axis=-1)  # no clipping
    before = optical_density(image)[inside] @ np.linalg.inv(matrix)
    after = optical_density(out)[inside] @ np.linalg.inv(matrix)
    # Rounding to uint8 moves a value by at most 0.5, i.e. od by 0.5 / (v + 1) < 0.05 here.
    assert np.abs(after[:, 2] - before[:, 2]).mean() < 0.01
    assert np.abs(after[:, :2] - (before[:, :2] * scale + shift)).mean() < 0.01
    assert np.abs(out.astype(int) - image).mean() > 1  # and it did change the image


def test_jitter_output_is_bounded_uint8_even_for_wild_jitter():
    image = every_value_image()
    for scale, shift in [((0.0, 0.0), (-1.0, -1.0)), ((3.0, 3.0), (1.0, 1.0)), ((1.0, 1.0), (5.0, -5.0))]:
        out = jitter_stains(image, stain_matrix("h_e"), scale, shift)
        assert out.dtype == np.uint8 and out.shape == image.shape


def test_jitter_refuses_other_than_uint8_rgb():
    with pytest.raises(TypeError):
        jitter_stains(np.zeros((4, 4, 3), np.float32), stain_matrix("h_pas"), (1, 1), (0, 0))
    with pytest.raises(TypeError):
        jitter_stains(np.zeros((4, 4), np.uint8), stain_matrix("h_pas"), (1, 1), (0, 0))


# ------------------------------------------------------- Reinhard normalisation


def test_lab_round_trip_is_exact():
    rng = np.random.default_rng(2)
    pixels = np.concatenate([every_value_image().reshape(-1, 3), rng.integers(0, 256, (200_000, 3), dtype=np.uint8)])
    assert np.array_equal(rgb_from_lab(lab_from_rgb(pixels)), pixels)


def tissue_slide(tile: np.ndarray, height: int = 512, width: int = 640) -> np.ndarray:
    """A (3, y, x) slide: glass with the (y, x, 3) ``tile`` repeated over a tissue rectangle."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GLASS
    reps = (-(-320 // tile.shape[0]), -(-480 // tile.shape[1]), 1)
    image[100:420, 80:560] = np.tile(tile, reps)[:320, :480]
    return image.transpose(2, 0, 1).copy()


def write_store(path, image_cyx):
    write_slide_store(path, image_cyx, chunk=64, min_level_size=64)
    return SlideStore(path)


@pytest.mark.parametrize(
    ("tile_size", "input_size", "read_level", "expected"),
    [(1024, 320, "auto", 2), (512, 64, "auto", 8), (256, 80, "auto", 2), (1024, 320, 0, 1), (512, 64, 1, 2)],
)
def test_statistics_are_measured_at_the_scale_training_reads(tile_size, input_size, read_level, expected):
    assert stats_downsample(tile_size, input_size, read_level) == expected
    assert stats_level(8, expected) == int(np.log2(expected)) and stats_level(2, 8) == 1


@pytest.mark.parametrize("downsample", [1, 4])
def test_slide_stats_are_those_of_the_tissue_pixels_of_the_level(tmp_path, downsample):
    rng = np.random.default_rng(3)
    palette = np.array([(200, 90, 160), (120, 40, 150), (230, 150, 200), (90, 60, 140)], dtype=np.uint8)
    store = write_store(tmp_path / "s.zarr", tissue_slide(palette[rng.integers(0, 4, (8, 8))]))
    image = store.levels[stats_level(len(store.levels), downsample)][:]
    assert image.shape[1] == -(-512 // downsample)
    lab = lab_from_rgb(image.transpose(1, 2, 0)[tissue_mask(image, THRESHOLD)])
    stats = slide_lab_stats(store, THRESHOLD, downsample)
    assert stats.pixels == len(lab) > 1000
    assert np.allclose(stats.mean, lab.mean(0), atol=1e-9) and np.allclose(stats.std, lab.std(0), atol=1e-9)
    glass = np.broadcast_to(np.array(GLASS, np.uint8)[:, None, None], (3, 256, 256))
    assert slide_lab_stats(write_store(tmp_path / "glass.zarr", glass), THRESHOLD, downsample).pixels == 0


def test_large_levels_are_sampled_in_evenly_spaced_bands(tmp_path):
    rows = BAND_ROWS
    assert sample_bands(3 * rows + 5, 100) == [(0, rows), (rows, rows), (2 * rows, rows), (3 * rows, 5)]  # all rows
    bands = sample_bands(160 * rows, 1000, max_pixels=10 * rows * 1000)
    assert len(bands) == 10 and bands[0] == (0, rows) and {b[1] for b in bands} == {rows}
    assert np.all(np.diff([b[0] for b in bands]) == 16 * rows)
    assert sample_bands(100, 10**9, max_pixels=10) == [(0, rows)]  # at least one band
    store = write_store(tmp_path / "s.zarr", tissue_slide(pas_tile()))
    budget = 512 * 640 // 4  # a quarter of the slide's rows
    rows_read = [y for y0, n in sample_bands(512, 640, max_pixels=budget) for y in range(y0, y0 + n)]
    assert len(rows_read) == 512 // 4
    image = store.levels[0][:, rows_read, :]
    lab = lab_from_rgb(image.transpose(1, 2, 0)[tissue_mask(image, THRESHOLD)])
    stats = slide_lab_stats(store, THRESHOLD, 1, max_pixels=budget)
    assert stats.pixels == len(lab) and np.allclose(stats.mean, lab.mean(0), atol=1e-9)


def test_reference_averages_the_slides_with_enough_tissue_each_weighing_the_same():
    stats = {
        "a": LabStats(5000, (-1.0, 0.1, 0.0), (0.2, 0.02, 0.01)),
        "b": LabStats(1_000_000, (-0.5, 0.3, 0.2), (0.4, 0.04, 0.03)),
        "c": LabStats(10, (9.0, 9.0, 9.0), (9.0, 9.0, 9.0)),  # too little tissue: not used
    }
    reference = fit_reference(stats, THRESHOLD, 2)
    assert np.allclose(reference["lab_mean"], [-0.75, 0.2, 0.1]) and np.allclose(
        reference["lab_std"], [0.3, 0.03, 0.02]
    )
    assert [reference["slides"][s]["used"] for s in "abc"] == [True, True, False]
    assert reference["saturation_threshold"] == THRESHOLD and reference["stats_downsample"] == 2
    json.dumps(reference)  # JSON-able
    with pytest.raises(InputError, match="no training slide has 1000 tissue pixels"):
        fit_reference({"c": stats["c"]}, THRESHOLD, 2)


def fitted_on(store: SlideStore, downsample: int = 1) -> dict:
    """The normalisation settings of a reference fitted on the one slide ``store``."""
    return normalisation_settings(
        fit_reference({"s": slide_lab_stats(store, THRESHOLD, downsample)}, THRESHOLD, downsample)
    )


def test_a_slide_equal_to_the_reference_is_left_exactly_as_it_is(tmp_path):
    store = write_store(tmp_path / "s.zarr", tissue_slide(pas_tile()))
    mapping = slide_map(store, fitted_on(store, 2))
    assert mapping.is_identity
    image = pas_tile(seed=4)
    assert mapping.apply(image) is image


def test_a_slide_with_shifted_colours_is_mapped_back_to_the_reference(tmp_path):
    tile = pas_tile()
    settings = fitted_on(write_store(tmp_path / "ref.zarr", tissue_slide(tile)))
    # Another lab: darker, more contrasted tissue of other hues (a known map in lαβ, clipping nothing),
    # on the same glass.
    shifted_tile = ReinhardMap(scale=(1.1, 1.15, 0.9), offset=(-0.06, -0.01, 0.01)).apply(tile)
    assert np.abs(shifted_tile.astype(int) - tile).mean() > 10 and 0 < shifted_tile.min() <= shifted_tile.max() < 255
    shifted_slide = tissue_slide(shifted_tile)
    mapping = slide_map(write_store(tmp_path / "other.zarr", shifted_slide), settings)
    assert np.abs(mapping.apply(shifted_tile).astype(int) - tile).mean() < 1  # back to the reference's colours
    normalised = mapping.apply(shifted_slide.transpose(1, 2, 0)).transpose(2, 0, 1).copy()
    stats = slide_lab_stats(write_store(tmp_path / "normalised.zarr", normalised), THRESHOLD, 1)
    assert np.allclose(stats.mean, settings["lab_mean"], atol=0.005)
    assert np.allclose(stats.std, settings["lab_std"], rtol=0.02)


def test_a_slide_with_too_little_tissue_is_not_normalised():
    settings = normalisation_settings(fit_reference({"a": LabStats(5000, (-1, 0, 0), (0.2, 0.02, 0.01))}, THRESHOLD, 2))
    assert ReinhardMap.between(LabStats(999, (-2, 1, 1), (0.5, 0.5, 0.5)), settings).is_identity
    assert not ReinhardMap.between(LabStats(1000, (-2, 1, 1), (0.5, 0.5, 0.5)), settings).is_identity


def test_reference_file_round_trip_and_refusals(tmp_path):
    reference = fit_reference({"a": LabStats(5000, (-1.0, 0.1, 0.0), (0.2, 0.02, 0.01))}, THRESHOLD, 2)
    path = tmp_path / "stain" / "reference.json"
    write_reference(path, reference)
    assert read_reference(path) == reference
    assert set(normalisation_settings(reference)) == set(reference) - {"slides"}
    path.write_text("{}")
    with pytest.raises(InputError, match="lacks method"):
        read_reference(path)
    path.write_text(json.dumps({**reference, "method": "macenko"}))
    with pytest.raises(InputError, match="unknown stain normalisation 'macenko'"):
        read_reference(path)
    path.write_text("not json")
    with pytest.raises(InputError, match="not a readable stain reference"):
        read_reference(path)


def test_glass_is_kept_and_tissue_is_mapped_fully_from_well_above_the_tissue_threshold():
    settings = normalisation_settings(fit_reference({"a": LabStats(5000, (-1, 0, 0), (0.2, 0.02, 0.01))}, THRESHOLD, 2))
    mapping = ReinhardMap.between(LabStats(5000, (-0.8, 0.05, 0.01), (0.3, 0.03, 0.02)), settings)
    assert mapping.glass_saturation == (15, 45)
    glass = np.array([[GLASS, (255, 255, 255), (128, 128, 128)]], dtype=np.uint8)  # saturation 8, 0, 0
    assert np.array_equal(mapping.apply(glass), glass)
    tissue = np.array([[(215, 140, 185), (120, 40, 150)]], dtype=np.uint8)  # saturation 89 and 187
    lab = lab_from_rgb(tissue) * np.array(mapping.scale) + np.array(mapping.offset)
    assert np.array_equal(mapping.apply(tissue), rgb_from_lab(lab))
    faint = np.array([[(200, 185, 190)]], dtype=np.uint8)  # saturation 19: a little of the way
    moved, full = (
        mapping.apply(faint).astype(int) - faint,
        rgb_from_lab(lab_from_rgb(faint) * np.array(mapping.scale) + np.array(mapping.offset)).astype(int) - faint,
    )
    assert 0 < np.abs(moved).sum() < np.abs(full).sum()
