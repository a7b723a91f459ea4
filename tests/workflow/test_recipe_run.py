"""The 1st-place recipe overlay runs end to end on the CPU: a tiny demo through ``submission``.

configs/hubmap_1st_place.yaml as a user runs it, with only what a CPU test
must change: the demo's data instead of Kaggle's (smaller slides, two
patients, so two patient-grouped folds), random encoder weights (no
download here), one epoch, a 64 px network input for the 1024 px tiles, a
small batch. Everything else is the recipe's: se_resnext101_32x4d with
CBAM, hypercolumns, deep supervision and the classification head, 1024/512
tiles, the recipe augmentations, two forked DataLoader workers (the GPU
path's loader), stage 2 retrained from scratch, four-flip TTA in fp32.
"""

import copy
import csv
import json

import pytest
import yaml

from tests.workflow.runner import REPO, run_snakemake

pytestmark = pytest.mark.slow

RECIPE = yaml.safe_load((REPO / "configs/hubmap_1st_place.yaml").read_text())
CPU_CHANGES = {
    "data": {"root": None},
    "demo": {
        "train_patients": 2,
        "slides_per_patient": 1,
        "test_slides": 1,
        "external_slides": 1,
        "polygon_slides": 0,
    },
    "ingest": {"chunk": 256, "min_level_size": 256},
    "folds": {"n": 2, "patients": None},
    "model": {"encoder_weights": None},
    "train": {"epochs": 1, "batch_size": 2, "input_size": 64, "num_workers": 2},
    "inference": {"batch_size": 4},
}


def merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("recipe_run")
    overlay = merged(RECIPE, CPU_CHANGES)
    run_snakemake(workdir, overlay=overlay)
    return workdir, overlay


def _provenance(path):
    return json.loads(path.with_name(path.name + ".provenance.json").read_text())


def test_the_recipe_runs_through_the_submission(recipe_run):
    workdir, _ = recipe_run
    with open(workdir / "results/demo/data/sample_submission.csv") as f:
        expected = [row["id"] for row in csv.DictReader(f)]
    with open(workdir / "results/submission.csv") as f:
        assert [row["id"] for row in csv.DictReader(f)] == expected
    metrics = sorted((workdir / "results/models").glob("stage*/fold*/metrics.csv"))
    assert len(metrics) == 4
    for path in metrics:
        with open(path) as f:
            (epoch,) = list(csv.DictReader(f))
        assert int(epoch["samples"]) >= CPU_CHANGES["train"]["batch_size"], f"{path}: no training step"


def test_every_stage_records_the_recipes_settings(recipe_run):
    workdir, _ = recipe_run
    for stage in ("stage1", "stage2"):
        for fold in (0, 1):
            record = _provenance(workdir / f"results/models/{stage}/fold{fold}/model.pt")
            settings = record["params"]["settings"]
            assert {k: settings["model"][k] for k in RECIPE["model"]} == {**RECIPE["model"], "encoder_weights": None}
            assert settings["loss"] == RECIPE["loss"] and settings["sampling"] == RECIPE["sampling"]
            assert settings["train"]["augmentations"] == "recipe"
            assert (settings["train"]["lr"], settings["train"]["min_lr"]) == (1e-4, 1e-6), f"{stage}: the recipe's lr"
    for prediction in (workdir / "results/predictions").glob("stage*/*.zarr"):
        inference = _provenance(prediction)["params"]["inference"]
        assert inference["tta"] == ["none", "hflip", "vflip", "hvflip"] and inference["amp"] is False
        assert inference["min_tissue"] is None and inference["tile_size"] == 1024
