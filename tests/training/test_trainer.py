"""Training one fold: loss falls, resume is bit-identical, checkpoints reload, bad input stops early."""

import contextlib
import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.builders import write_slide_store
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tilepipe.data.tile_index import build_tile_index
from tilepipe.demo.plan import plan_demo
from tilepipe.demo.render import render_slide
from tilepipe.errors import InputError
from tilepipe.model import load_checkpoint
from tilepipe.training import trainer as train_module
from tilepipe.training.trainer import train_fold

SETTINGS = {
    "seed": 3,
    "model": {
        "encoder": "resnet18",
        "encoder_weights": None,
        "center_channels": 16,
        "decoder_channels": 8,
        "cbam": True,
        "hypercolumns": True,
        "deep_supervision": True,
        "clf_head": True,
    },
    "loss": {"bce": 1.0, "lovasz": 1.0, "deep": 0.1, "clf": 1.0},
    "train": {
        "epochs": 3,
        "batch_size": 4,
        "lr": 3e-3,
        "weight_decay": 1e-5,
        "min_lr": 1e-4,
        "input_size": 64,
        "read_level": "auto",
        "augmentations": [{"name": "HorizontalFlip", "p": 0.5}],
        "device": "cpu",
        "amp": True,
        "cpu_bf16": False,
        "channels_last": False,
        "num_workers": 0,
        "deterministic": True,
        "log_every": 100,
    },
    "sampling": {"min_img_std": None, "min_tissue_ratio": None},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four small demo slides (one per patient) with stores, tile index and 2 folds."""
    root = tmp_path_factory.mktemp("train_data")
    demo = {
        "train_patients": 4,
        "slides_per_patient": 1,
        "test_slides": 1,
        "external_slides": 0,
        "height": 512,
        "width": 512,
        "glomerulus_diameter": [40, 90],
        "size_jitter": 0.0,
        "polygon_slides": 0,
    }
    slides = [s for s in plan_demo(demo, seed=5) if s.split == "train"]
    stores, tiles = {}, []
    for slide in slides:
        rendered = render_slide(slide, seed=5)
        path = root / f"{slide.id}.zarr"
        write_slide_store(path, rendered.image.transpose(2, 0, 1), rendered.mask, chunk=128, min_level_size=128)
        stores[slide.id] = str(path)
        tiles.append(build_tile_index(path, slide.id, size=128, shift=64, saturation_threshold=30))
    folds = pd.DataFrame(
        {"slide": [s.id for s in slides], "patient": [str(s.patient) for s in slides], "fold": [0, 0, 1, 1]}
    )
    return pd.concat(tiles, ignore_index=True), folds, stores


def kill_in_epoch(monkeypatch, killed_epoch: int):
    """Make training raise KeyboardInterrupt at the start of epoch ``killed_epoch``; return the real train_epoch."""
    original = train_module.FoldTrainer.train_epoch

    def train_epoch(self, epoch):
        if epoch == killed_epoch:
            raise KeyboardInterrupt("killed")
        return original(self, epoch)

    monkeypatch.setattr(train_module.FoldTrainer, "train_epoch", train_epoch)
    return original


def run(dataset, out: Path, settings=SETTINGS, fold=0, init_path=None, **budget):
    tiles, folds, stores = dataset
    train_fold(
        tiles,
        folds,
        stores,
        fold,
        settings,
        out / "model.pt",
        out / "metrics.csv",
        out / "state" / "last.pt",
        init_path=init_path,
        **budget,
    )
    return pd.read_csv(out / "metrics.csv")


@contextlib.contextmanager
def final_weights_of_fit():
    """Yields a list that collects the weights every FoldTrainer.fit ends with (its state file is deleted)."""
    collected = []
    original = train_module.FoldTrainer.fit

    def fit_and_collect(self, *args):
        original(self, *args)
        collected.append({k: v.clone() for k, v in self.model.state_dict().items()})

    train_module.FoldTrainer.fit = fit_and_collect
    try:
        yield collected
    finally:
        train_module.FoldTrainer.fit = original


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory) -> Path:
    """An uninterrupted run of SETTINGS; returns its folder (its final weights in final.pt)."""
    out = tmp_path_factory.mktemp("straight")
    with final_weights_of_fit() as collected:
        run(dataset, out)
    torch.save(collected[0], out / "final.pt")
    return out


def test_loss_falls_and_outputs_are_written(straight):
    metrics = pd.read_csv(straight / "metrics.csv")
    tmp_path = straight
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    # The recipe's cosine schedule: lr in the first epoch, min_lr exactly in the last.
    assert metrics["lr"].iloc[0] == pytest.approx(SETTINGS["train"]["lr"])
    assert metrics["lr"].iloc[-1] == pytest.approx(SETTINGS["train"]["min_lr"])
    assert metrics["lr"].iloc[0] > metrics["lr"].iloc[1] > metrics["lr"].iloc[-1]
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["extra"]["val_dice"] == pytest.approx(metrics["val_dice"].max())
    assert checkpoint["geometry"] == {
        "tile_size": 128,
        "input_size": SETTINGS["train"]["input_size"],
        "read_level": SETTINGS["train"]["read_level"],
        "mpp": None,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def test_finished_run_leaves_no_resumable_state(straight):
    assert (straight / "model.pt").is_file()
    assert not list((straight / "state").iterdir()), "a finished job must not resume on its next run"


def test_spent_time_budget_stops_at_the_next_batch_and_keeps_a_loadable_checkpoint(dataset, tmp_path):
    metrics = run(dataset, tmp_path, max_seconds=0)
    batch = SETTINGS["train"]["batch_size"]
    assert list(metrics["epoch"]) == [1], "no epoch starts after the deadline"
    assert list(metrics["samples"]) == [batch], "the first step ends the epoch"
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["extra"]["epoch"] == 1
    assert checkpoint["extra"]["val_dice"] == pytest.approx(metrics["val_dice"].iloc[0])
    assert not load_checkpoint(tmp_path / "model.pt").training
    assert not list((tmp_path / "state").iterdir()), "a stopped run is finished: no resumable state"


@pytest.mark.parametrize("max_seconds", [None, 1e6])
def test_unspent_or_no_time_budget_trains_the_same_weights(dataset, straight, tmp_path, max_seconds):
    """The default run (``straight``, no budget argument) and these end with the same bytes."""
    metrics = run(dataset, tmp_path, max_seconds=max_seconds)
    expected = pd.read_csv(straight / "metrics.csv")
    pd.testing.assert_frame_equal(metrics.drop(columns="seconds"), expected.drop(columns="seconds"))
    assert (tmp_path / "model.pt").read_bytes() == (straight / "model.pt").read_bytes()


@pytest.mark.faults
def test_killed_run_resumes_bit_identical(dataset, straight, tmp_path, monkeypatch):
    original = kill_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "model.pt").exists(), "no declared output after a kill"
    monkeypatch.setattr(train_module.FoldTrainer, "train_epoch", original)
    with final_weights_of_fit() as final_weights:
        metrics = run(dataset, tmp_path / "resumed")
    expected = pd.read_csv(straight / "metrics.csv")
    pd.testing.assert_frame_equal(metrics.drop(columns="seconds"), expected.drop(columns="seconds"))
    a = torch.load(straight / "final.pt", weights_only=True)
    b = final_weights[-1]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "final weights differ after resume"
    assert (straight / "model.pt").read_bytes() == (tmp_path / "resumed" / "model.pt").read_bytes()


def test_checkpoint_reloads_to_the_best_epoch(dataset, straight):
    tiles, folds, stores = dataset
    inputs = train_module.fold_inputs(tiles, folds, 0, stores, SETTINGS["sampling"])
    trainer = train_module.FoldTrainer(inputs, 0, SETTINGS, torch.device("cpu"))
    trainer.model = load_checkpoint(straight / "model.pt")
    assert not trainer.model.training
    best = pd.read_csv(straight / "metrics.csv")["val_dice"].max()
    assert trainer.validate(epoch=1)["val_dice"] == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {**SETTINGS["model"], "encoder": "resnet999"}}, "unknown encoder 'resnet999'"),
        ({"train": {**SETTINGS["train"], "augmentations": [{"name": "Sharpenn"}]}}, "Sharpenn"),
        ({"train": {**SETTINGS["train"], "augmentations": "heavy"}}, "expected recipe, light, none or a list"),
        ({"sampling": {"min_img_std": 1e9, "min_tissue_ratio": None}}, "no validation tiles"),
        ({"train": {**SETTINGS["train"], "batch_size": 100_000}}, "fewer than train.batch_size 100000"),
    ],
)
def test_bad_settings_fail_before_training(dataset, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        run(dataset, tmp_path, {**SETTINGS, **change})
    assert not (tmp_path / "state").exists() and not (tmp_path / "model.pt").exists()


def test_state_of_other_training_data_is_not_resumed(dataset, tmp_path, monkeypatch):
    tiles, folds, stores = dataset
    kill_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path)
    state = tmp_path / "state" / "last.pt"

    def trainer_of(tile_rows):
        inputs = train_module.fold_inputs(tile_rows, folds, 0, stores, SETTINGS["sampling"])
        return train_module.FoldTrainer(inputs, 0, SETTINGS, torch.device("cpu"))

    assert trainer_of(tiles).load_state(state), "same settings and data: resumes"
    fewer = tiles.drop(index=tiles.index[tiles["is_masked"]][:1]).reset_index(drop=True)
    assert not trainer_of(fewer).load_state(state), "one tile fewer: starts afresh"


def test_stage2_starts_from_the_given_checkpoint(dataset, straight, tmp_path):
    tiles, folds, stores = dataset
    inputs = train_module.fold_inputs(tiles, folds, 0, stores, SETTINGS["sampling"])
    started = train_module.FoldTrainer(inputs, 0, SETTINGS, torch.device("cpu"), init_path=straight / "model.pt")
    best = load_checkpoint(straight / "model.pt").state_dict()
    assert all(torch.equal(started.model.state_dict()[k], best[k]) for k in best)
    assert started.validate(epoch=1)["val_dice"] == pytest.approx(
        pd.read_csv(straight / "metrics.csv")["val_dice"].max()
    )
    other = {**SETTINGS, "model": {**SETTINGS["model"], "decoder_channels": 16}}
    with pytest.raises(InputError, match="decoder_channels") as err:
        run(dataset, tmp_path, other, init_path=straight / "model.pt")
    assert str(straight / "model.pt") in str(err.value)
    assert not (tmp_path / "model.pt").exists()


def test_validation_reports_clf_accuracy_by_the_models_head_and_refuses_no_tiles(dataset):
    tiles, folds, stores = dataset
    inputs = train_module.fold_inputs(tiles, folds, 0, stores, SETTINGS["sampling"])
    with_head = train_module.FoldTrainer(inputs, 0, SETTINGS, torch.device("cpu"))
    assert 0 <= with_head.validate(epoch=1)["val_clf_acc"] <= 1
    no_head = {**SETTINGS, "model": {**SETTINGS["model"], "clf_head": False}}
    without_head = train_module.FoldTrainer(inputs, 0, no_head, torch.device("cpu"))
    assert math.isnan(without_head.validate(epoch=1)["val_clf_acc"])
    with_head.inputs = dataclasses.replace(inputs, valid=inputs.valid.iloc[:0])
    with pytest.raises(InputError, match="no validation tiles"):
        with_head.validate(epoch=1)


def test_resume_without_the_best_checkpoint_keeps_the_best_of_what_it_has(dataset, tmp_path, monkeypatch):
    """best.pt lost while the state survives: the best checkpoint and best_dice must describe the same epoch."""
    dice_of_epoch = {1: 0.9, 2: 0.5, 3: 0.7}
    validate = train_module.FoldTrainer.validate
    monkeypatch.setattr(
        train_module.FoldTrainer,
        "validate",
        lambda self, epoch: {**validate(self, epoch), "val_dice": dice_of_epoch[epoch]},
    )
    train_epoch = kill_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path)
    (tmp_path / "state" / "best.pt").unlink()  # epoch 1's checkpoint (Dice 0.9) is gone
    monkeypatch.setattr(train_module.FoldTrainer, "train_epoch", train_epoch)
    metrics = run(dataset, tmp_path)
    assert list(metrics["val_dice"]) == [0.9, 0.5, 0.7]
    extra = torch.load(tmp_path / "model.pt", weights_only=True)["extra"]
    assert (extra["epoch"], extra["val_dice"]) == (3, 0.7), "epoch 3 is the best of the epochs with weights"


def test_pseudo_tiles_join_training_masked_and_past_the_background_filters(dataset):
    """As the recipe's stage 2: pseudo tiles with ``is_masked`` and ``img_std > 10`` only."""
    tiles, folds, stores = dataset
    pseudo = tiles[tiles["slide"] == tiles["slide"].iloc[0]].head(6).copy()
    pseudo["slide"] = "pseudo1"
    pseudo["is_masked"] = [True, True, True, False, False, True]
    pseudo["img_std"] = [50.0, 5.0, 10.0, 50.0, 5.0, 11.0]
    sampling = {**SETTINGS["sampling"], "min_img_std": 10}
    plain = train_module.fold_inputs(tiles, folds, 0, stores, sampling)
    inputs = train_module.fold_inputs(tiles, folds, 0, stores, sampling, pseudo_tiles=pseudo)
    joined = inputs.train[inputs.train["slide"] == "pseudo1"]
    assert sorted(joined["img_std"]) == [11.0, 50.0]
    assert len(inputs.train) == len(plain.train) + 2
