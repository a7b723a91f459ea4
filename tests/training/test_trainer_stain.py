"""Training with stain normalisation: every slide mapped to the reference, the reference in the checkpoint."""

import pytest
import torch

from tests.training.test_trainer import SETTINGS
from tests.training.test_trainer import dataset as dataset  # the shared fixture
from tilepipe.data.stain import fit_reference, normalisation_settings, slide_lab_stats, slide_map, stats_downsample
from tilepipe.stores.slide import SlideStore
from tilepipe.training import trainer as train_module
from tilepipe.training.trainer import train_fold


@pytest.fixture(scope="module")
def reference(dataset):
    """A stain reference fitted on the dataset's first two slides (the others are then mapped to them)."""
    _, _, stores = dataset
    downsample = stats_downsample(128, SETTINGS["train"]["input_size"], SETTINGS["train"]["read_level"])
    stats = {s: slide_lab_stats(SlideStore(p), 30, downsample) for s, p in sorted(stores.items())[:2]}
    return fit_reference(stats, 30, downsample)


def test_a_fold_trains_on_normalised_tiles_and_its_checkpoint_carries_the_reference(
    dataset, reference, tmp_path, monkeypatch
):
    tiles, folds, stores = dataset
    seen = []
    original = train_module.TileDataset.__init__

    def record(self, *args, **kwargs):
        seen.append(kwargs.get("stain"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(train_module.TileDataset, "__init__", record)
    settings = {**SETTINGS, "train": {**SETTINGS["train"], "epochs": 1}}
    train_fold(
        tiles,
        folds,
        stores,
        0,
        settings,
        tmp_path / "model.pt",
        tmp_path / "m.csv",
        tmp_path / "state" / "last.pt",
        stain_reference=reference,
    )
    stain = normalisation_settings(reference)
    expected = {slide: slide_map(SlideStore(path), stain) for slide, path in stores.items()}
    assert seen and all(maps == expected for maps in seen)  # training and validation loaders alike
    assert any(not m.is_identity for m in expected.values())
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["geometry"]["stain"] == stain
