"""Figures: each writes a PNG whose pixels depend on its input (tilepipe.evaluation.plots)."""

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.builders import write_slide_store
from tilepipe.evaluation.dice import RunsRows
from tilepipe.evaluation.gate import SWEEP_COLUMNS
from tilepipe.evaluation.plots import (
    PREDICTION_RGB,
    TRUTH_RGB,
    plot_gate_sweep,
    plot_overlay,
    plot_slide_dice,
    plot_threshold_sweep,
    plot_training_curves,
    strided_mask,
)
from tilepipe.io import rle
from tilepipe.stores.probability import read_probability, write_probability


def png_pixels(path) -> np.ndarray:
    """The PNG at ``path`` as an RGB array (fails unless it is a non-empty image)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.size > 0, f"{path} is not a readable PNG"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or not np.array_equal(a, b)


def has_colour(image: np.ndarray, rgb, tolerance: int = 10) -> bool:
    return bool((np.abs(image.astype(int) - np.asarray(rgb)).max(axis=-1) <= tolerance).any())


def metrics(val_dice_end: float) -> pd.DataFrame:
    epochs = np.arange(1, 7)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "lr": 1e-3,
            "train_loss": 1.0 / epochs,
            "val_loss": 1.2 / epochs,
            "val_dice": np.linspace(0.2, val_dice_end, 6),
            "val_clf_acc": 0.9,
            "samples": 64,
            "seconds": 1.0,
        }
    )


def test_training_curves_depend_on_the_metrics(tmp_path):
    plot_training_curves({0: metrics(0.9), 1: metrics(0.8)}, tmp_path / "a.png", "stage1")
    plot_training_curves({0: metrics(0.9), 1: metrics(0.3)}, tmp_path / "b.png", "stage1")
    a, b = png_pixels(tmp_path / "a.png"), png_pixels(tmp_path / "b.png")
    assert a.shape == b.shape and differ(a, b)
    plot_training_curves({0: metrics(0.9)}, tmp_path / "one.png", "stage1")
    assert png_pixels(tmp_path / "one.png").shape[1] < a.shape[1], "one panel per fold"


def dice_table(dice) -> pd.DataFrame:
    n = len(dice)
    return pd.DataFrame(
        {
            "slide": [f"s{i}" for i in range(n)],
            "fold": [i % 2 for i in range(n)],
            "threshold": 0.5,
            "dice": dice,
            "intersection": 1,
            "predicted_pixels": 1,
            "truth_pixels": 1,
            "best_threshold": 0.4,
            "best_dice": np.minimum(np.asarray(dice) + 0.05, 1),
        }
    )


def test_slide_dice_bars_depend_on_the_dice(tmp_path):
    plot_slide_dice(dice_table([0.9, 0.8, 0.7, 0.95]), tmp_path / "a.png", "stage1")
    plot_slide_dice(dice_table([0.9, 0.2, 0.7, 0.95]), tmp_path / "b.png", "stage1")
    a, b = png_pixels(tmp_path / "a.png"), png_pixels(tmp_path / "b.png")
    assert a.shape == b.shape and differ(a, b)


def sweep(peak: float) -> pd.DataFrame:
    cutoffs = np.arange(1, 256)
    thresholds = np.round(cutoffs / 255, 4)
    return pd.DataFrame(
        {
            "cutoff": cutoffs,
            "threshold": thresholds,
            "mean_dice": 1 - (thresholds - peak) ** 2,
            "global_dice": 0.9 - (thresholds - peak) ** 2,
        }
    )


def test_threshold_sweep_depends_on_the_curves(tmp_path):
    thresholds = {"stage1": 0.5, "stage2": 0.5}
    plot_threshold_sweep({"stage1": sweep(0.5), "stage2": sweep(0.4)}, thresholds, tmp_path / "a.png")
    plot_threshold_sweep({"stage1": sweep(0.5), "stage2": sweep(0.7)}, thresholds, tmp_path / "b.png")
    a, b = png_pixels(tmp_path / "a.png"), png_pixels(tmp_path / "b.png")
    assert a.shape == b.shape and differ(a, b)


def gate_sweep_table(steepness: float, scored: bool = True) -> pd.DataFrame:
    """A gate sweep (off, 0, 0.05, ..., 0.95) whose Dice falls and skipped share rises with the gate."""
    gates = np.round(np.arange(0, 1, 0.05), 2)
    lost = np.concatenate([[0.0], steepness * gates**2])
    table = pd.DataFrame(
        {
            "gate": np.concatenate([[np.nan], gates]),
            "configured": np.concatenate([[False], gates == 0.5]),
            "mean_dice": 0.9 - lost,
            "object_recall": 0.95 - lost,
            "pixel_recall_lost": lost,
            "scored_windows": 10 if scored else 0,
            "skipped_share": np.concatenate([[0.0], gates]) if scored else 0.0,
        }
    )
    return table.reindex(columns=SWEEP_COLUMNS)


def test_gate_sweep_depends_on_the_curves_and_names_unscored_stages(tmp_path):
    plot_gate_sweep({"stage1": gate_sweep_table(0.1), "stage2": gate_sweep_table(0.3)}, tmp_path / "a.png")
    plot_gate_sweep({"stage1": gate_sweep_table(0.1), "stage2": gate_sweep_table(0.6)}, tmp_path / "b.png")
    plot_gate_sweep({"stage1": gate_sweep_table(0.1), "stage2": gate_sweep_table(0.3, False)}, tmp_path / "c.png")
    a, b, c = (png_pixels(tmp_path / f"{name}.png") for name in "abc")
    assert a.shape == b.shape == c.shape and differ(a, b) and differ(a, c)
    assert has_colour(a, (255, 127, 14), tolerance=3), "stage2 is drawn in C1"
    assert not has_colour(c, (255, 127, 14), tolerance=3), "an unscored stage is named, not drawn"


@pytest.mark.parametrize(("shape", "step"), [((37, 29), 4), ((64, 64), 8), ((5, 3), 1)])
def test_strided_mask_equals_numpy_striding(shape, step, monkeypatch):
    monkeypatch.setattr("tilepipe.evaluation.plots.BAND_PIXELS", 50)  # many bands of a few rows
    values = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(strided_mask(values, step, 128), (values[::step, ::step] >= 128).astype(np.uint8))


@pytest.fixture
def slide(tmp_path):
    """A 256 x 320 slide (pyramid down to 64 x 80) with one square glomerulus as its truth."""
    image = np.full((3, 256, 320), 230, np.uint8)
    image[:, 40:220, 40:280] = np.array([200, 120, 180], np.uint8)[:, None, None]
    truth = np.zeros((256, 320), np.uint8)
    truth[80:160, 100:200] = 1
    write_slide_store(tmp_path / "slide.zarr", image, truth, chunk=64, min_level_size=80)
    return tmp_path / "slide.zarr", truth


def prediction(tmp_path, name, box) -> object:
    probability = np.zeros((256, 320), np.uint8)
    y0, y1, x0, x1 = box
    probability[y0:y1, x0:x1] = 230
    write_probability(tmp_path / name, probability, chunk=64)
    return read_probability(tmp_path / name)


def test_overlay_outlines_prediction_and_truth(tmp_path, slide):
    store, truth = slide
    near = prediction(tmp_path, "near.zarr", (84, 164, 104, 204))
    far = prediction(tmp_path, "far.zarr", (20, 60, 200, 300))
    plot_overlay(store, near, 128, tmp_path / "near.png", "near", truth=truth)
    plot_overlay(store, far, 128, tmp_path / "far.png", "far", truth=truth)
    a, b = png_pixels(tmp_path / "near.png"), png_pixels(tmp_path / "far.png")
    assert a.shape == b.shape and differ(a, b)
    assert has_colour(a, PREDICTION_RGB) and has_colour(a, TRUTH_RGB)


def test_overlay_takes_the_truth_from_an_rle_or_none(tmp_path, slide):
    store, truth = slide
    near = prediction(tmp_path, "near.zarr", (84, 164, 104, 204))
    runs = RunsRows(rle.parse(rle.encode(truth), truth.shape))
    plot_overlay(store, near, 128, tmp_path / "rle.png", "rle", truth=runs)
    plot_overlay(store, near, 128, tmp_path / "array.png", "rle", truth=truth)
    plot_overlay(store, near, 128, tmp_path / "none.png", "rle")
    with_rle, with_array = png_pixels(tmp_path / "rle.png"), png_pixels(tmp_path / "array.png")
    without = png_pixels(tmp_path / "none.png")
    assert np.array_equal(with_rle, with_array)
    assert has_colour(without, PREDICTION_RGB) and not has_colour(without, TRUTH_RGB)
