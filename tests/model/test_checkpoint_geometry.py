"""Checkpoints carry the input geometry inference needs (and the stain normalisation, optional key ``stain``);
an ensemble's members must agree on it."""

import pandas as pd
import pytest
import torch

from tilepipe.config import defaults
from tilepipe.data.stain import LabStats, fit_reference, normalisation_settings
from tilepipe.errors import InputError
from tilepipe.inference.settings import prediction_settings, with_geometry
from tilepipe.model import (
    GEOMETRY_KEYS,
    build_model,
    checkpoint_geometry,
    ensemble_geometry,
    load_checkpoint,
    load_ensemble,
    save_checkpoint,
)
from tilepipe.model.checkpoint import FORMAT
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


def test_geometry_is_stored_and_read_back(tmp_path, model):
    save_checkpoint(tmp_path / "a.pt", model, SMALL, geometry=GEOMETRY)
    assert checkpoint_geometry(tmp_path / "a.pt") == GEOMETRY
    assert list(checkpoint_geometry(tmp_path / "a.pt")) == list(GEOMETRY_KEYS)
    with pytest.raises(ValueError, match="geometry needs exactly the keys"):
        save_checkpoint(tmp_path / "b.pt", model, SMALL, geometry={"tile_size": 1024})
    assert not (tmp_path / "b.pt").exists()


def test_a_checkpoint_without_geometry_still_loads(tmp_path, model):
    """Checkpoints written before the geometry was stored: no geometry key at all."""
    payload = {"format": FORMAT, "settings": SMALL, "state_dict": model.state_dict(), "extra": {}}
    torch.save(payload, tmp_path / "old.pt")
    assert checkpoint_geometry(tmp_path / "old.pt") is None
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert ensemble_geometry([tmp_path / "old.pt", tmp_path / "old.pt"]) is None


def test_an_ensemble_whose_members_disagree_is_refused_naming_both(tmp_path, model):
    save_checkpoint(tmp_path / "fold0.pt", model, SMALL, geometry=GEOMETRY)
    save_checkpoint(tmp_path / "fold1.pt", model, SMALL, geometry=GEOMETRY)
    save_checkpoint(tmp_path / "fold2.pt", model, SMALL, geometry={**GEOMETRY, "input_size": 256})
    assert ensemble_geometry([tmp_path / "fold0.pt", tmp_path / "fold1.pt"]) == GEOMETRY
    with pytest.raises(InputError, match=r"fold2.pt: its input geometry differs from .*fold0.pt's \(input_size"):
        ensemble_geometry([tmp_path / "fold0.pt", tmp_path / "fold1.pt", tmp_path / "fold2.pt"])


def test_inference_takes_the_checkpoints_geometry():
    settings = prediction_settings(defaults())
    same, changes = with_geometry(settings, None)
    assert same == settings and changes == []
    updated, changes = with_geometry(settings, GEOMETRY)
    assert (updated["tile_size"], updated["input_size"], updated["read_level"]) == (1024, 320, "auto")
    assert updated["mean"] == [0.5] * 3 and updated["std"] == [0.25] * 3
    assert changes == [
        f"tile_size: {settings['tile_size']!r} -> 1024",
        f"input_size: {settings['input_size']!r} -> 320",
    ]
    assert updated["tta"] == settings["tta"], "only the geometry changes"


def test_an_ensemble_loads_each_file_once_with_its_geometry(tmp_path, model, monkeypatch):
    import tilepipe.model.checkpoint as checkpoint

    for fold in (0, 1):
        save_checkpoint(tmp_path / f"fold{fold}.pt", model, SMALL, geometry=GEOMETRY)
    save_checkpoint(tmp_path / "other.pt", model, SMALL, geometry={**GEOMETRY, "tile_size": 512})
    reads = []
    read = checkpoint.read_torch_file
    monkeypatch.setattr(checkpoint, "read_torch_file", lambda path, *a: reads.append(path) or read(path, *a))
    models, geometry = load_ensemble([tmp_path / "fold0.pt", tmp_path / "fold1.pt"])
    assert geometry == GEOMETRY and len(models) == 2 and not models[0].training
    assert reads == [tmp_path / "fold0.pt", tmp_path / "fold1.pt"], "one read per file"
    with pytest.raises(InputError, match=r"other.pt: its input geometry differs from .*fold0.pt's \(tile_size"):
        load_ensemble([tmp_path / "fold0.pt", tmp_path / "other.pt"])


@pytest.mark.parametrize(
    ("slide_mpp", "tile"),
    [(0.5, 1024), (0.49, 1024), (0.25, 2048), (0.252, 2032), (1.0, 512), (None, 1024)],
)
def test_windows_cover_the_training_tissue_on_slides_at_another_resolution(slide_mpp, tile):
    """Within 5 % of the models' pixel size nothing changes; beyond, the window side in slide pixels scales."""
    settings = prediction_settings(defaults())
    updated, changes = with_geometry(settings, GEOMETRY, slide_mpp)
    assert updated["tile_size"] == tile and updated["input_size"] == 320
    assert any("resampled to the training resolution" in c for c in changes) == (tile != 1024)


def test_models_without_a_pixel_size_are_not_resampled():
    settings = prediction_settings(defaults())
    updated, _ = with_geometry(settings, {**GEOMETRY, "mpp": None}, 0.25)
    assert updated["tile_size"] == 1024


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
