"""A checkpoint carries the stain normalisation of its training slides (optional geometry key ``stain``)."""

import pandas as pd
import pytest
import torch

from tilepipe.data.stain import LabStats, fit_reference, normalisation_settings
from tilepipe.errors import InputError
from tilepipe.inference.settings import with_geometry
from tilepipe.model import build_model, checkpoint_geometry, ensemble_geometry, load_ensemble, save_checkpoint
from tilepipe.model.checkpoint import GEOMETRY_KEYS
from tilepipe.training.trainer import training_geometry

SMALL = {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8}
GEOMETRY = {
    "tile_size": 1024,
    "input_size": 320,
    "read_level": "auto",
    "mpp": 0.5,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
}
STAIN = normalisation_settings(
    fit_reference({"a": LabStats(5000, (-0.6, 0.1, 0.02), (0.2, 0.03, 0.01))}, saturation_threshold=30, downsample=2)
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SMALL)


def test_the_stain_normalisation_round_trips_and_is_absent_when_not_used(tmp_path, model):
    save_checkpoint(tmp_path / "stain.pt", model, SMALL, geometry={**GEOMETRY, "stain": STAIN})
    assert checkpoint_geometry(tmp_path / "stain.pt") == {**GEOMETRY, "stain": STAIN}
    save_checkpoint(tmp_path / "plain.pt", model, SMALL, geometry=GEOMETRY)
    assert list(checkpoint_geometry(tmp_path / "plain.pt")) == list(GEOMETRY_KEYS)  # the format as before
    _, geometry = load_ensemble([tmp_path / "stain.pt", tmp_path / "stain.pt"])
    assert geometry["stain"] == STAIN
    with pytest.raises(InputError, match=r"plain.pt: its input geometry differs from .*stain.pt's \(stain"):
        ensemble_geometry([tmp_path / "stain.pt", tmp_path / "plain.pt"])
    with pytest.raises(ValueError, match="geometry needs exactly the keys"):
        save_checkpoint(tmp_path / "bad.pt", model, SMALL, geometry={**GEOMETRY, "colour": STAIN})


def test_training_geometry_records_the_stain_normalisation_only_when_given():
    tiles = pd.DataFrame({"size": [256, 256]})
    train = {"input_size": 64, "read_level": "auto"}
    assert "stain" not in training_geometry(tiles, train, 0.5)
    assert training_geometry(tiles, train, 0.5, STAIN)["stain"] == STAIN


def test_inference_takes_the_stain_normalisation_from_the_checkpoints():
    settings = {"tile_size": 512, "input_size": 64, "read_level": "auto"}
    updated, changes = with_geometry(settings, GEOMETRY)
    assert "stain" not in updated
    updated, changes = with_geometry(settings, {**GEOMETRY, "stain": STAIN})
    assert updated["stain"] == STAIN and any(c.startswith("stain: None -> reinhard") for c in changes)
    # A slide of half the pixel size: windows twice as wide, statistics at twice the downsample (same micrometres).
    updated, _ = with_geometry(settings, {**GEOMETRY, "stain": STAIN}, slide_mpp=0.25)
    assert updated["tile_size"] == 2048 and updated["stain"]["stats_downsample"] == 4 and STAIN["stats_downsample"] == 2
