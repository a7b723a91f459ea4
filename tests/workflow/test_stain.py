"""Stain normalisation in the DAG: rule stain_reference runs, and training waits for it, only when it is set."""

import json

import pytest
import torch
import yaml
import zarr

from tests.workflow.runner import REPO, TINY, run_snakemake, scheduled_jobs
from tilepipe.data.stain import normalisation_settings, read_reference

STAIN = yaml.safe_load((REPO / "configs" / "stain.yaml").read_text())


def overlay(**sections) -> dict:
    merged = {key: dict(value) for key, value in TINY.items()}
    for key, value in sections.items():
        merged[key] = {**merged.get(key, {}), **value}
    return merged


@pytest.mark.parametrize("enabled", [False, True])
def test_a_training_job_depends_on_the_stain_reference_only_when_normalising(tmp_path, enabled):
    settings = overlay(**STAIN) if enabled else overlay()
    result = run_snakemake(tmp_path, "-n", "results/models/stage1/fold0/model.pt", overlay=settings)
    rules = [job.rule for job in scheduled_jobs(result)]
    assert rules.count("stain_reference") == (1 if enabled else 0)
    assert rules.count("train_model") == 1


@pytest.mark.slow
def test_a_normalised_run_records_the_reference_in_every_model_and_prediction(tmp_path):
    # Two folds and one stage keep the run short (the stain reference does
    # not depend on either); the submission still needs every fold model
    # and a prediction of every test slide.
    run_snakemake(tmp_path, overlay=overlay(**STAIN, folds={"n": 2}, pseudo={"enabled": False}))
    reference = read_reference(tmp_path / "results/stain/reference.json")
    assert all(slide["used"] for slide in reference["slides"].values())
    models = sorted((tmp_path / "results/models").glob("stage*/fold*/model.pt"))
    assert [path.parent.name for path in models] == ["fold0", "fold1"]
    for path in models:
        assert torch.load(path, weights_only=True)["geometry"]["stain"] == normalisation_settings(reference)
    predictions = sorted((tmp_path / "results/predictions").glob("stage1/*.zarr"))
    assert predictions
    for path in predictions:
        stain = zarr.open_group(path, mode="r").attrs["tilepipe"]["stain"]
        assert stain["lab_mean"] == reference["lab_mean"] and "slide_map" in stain
    log = (tmp_path / "results/models/stage1/fold0/train.log").read_text()
    assert "stain normalisation of each slide" in log
    provenance = json.loads((tmp_path / "results/stain/reference.json.provenance.json").read_text())
    assert provenance["params"]["method"] == "reinhard"
