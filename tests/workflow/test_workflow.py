"""End to end: the tiny demo through the default target, caching and config errors."""

import json
import re

import pandas as pd
import pytest
import yaml

from tests.workflow.runner import REPO, TINY, copy_run, run_snakemake, scheduled_jobs, scheduled_rules
from tilepipe import provenance
from tilepipe.provenance import provenance_path
from tilepipe.stores.slide import SlideStore

pytestmark = pytest.mark.slow


def test_demo_runs_through_folds(tiny_run):
    folds = pd.read_csv(tiny_run / "results/folds.csv")
    train = pd.read_csv(tiny_run / "results/demo/data/train.csv")
    assert list(folds.columns[:3]) == ["slide", "patient", "fold"]
    assert set(train["id"]) <= set(folds["slide"])
    assert folds["fold"].nunique() == 4
    assert folds.groupby("patient")["fold"].nunique().max() == 1, "a patient sits in one fold"
    for slide in folds["slide"]:
        store = SlideStore(tiny_run / f"results/slides/{slide}.zarr")
        assert store.has_labels
        tiles = pd.read_parquet(tiny_run / f"results/tiles/{slide}.parquet")
        assert set(tiles["grid"]) == {0, TINY["tiles"]["shift"]}
        assert tiles["is_masked"].any()
    submission = pd.read_csv(tiny_run / "results/demo/data/sample_submission.csv")
    for slide in submission["id"]:
        assert not SlideStore(tiny_run / f"results/slides/{slide}.zarr").has_labels


def test_finished_run_has_nothing_to_do(tiny_run):
    result = run_snakemake(tiny_run, "-n", overlay=TINY)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_tile_size_change_reruns_tiles_not_ingest(tiny_run):
    overlay = {**TINY, "tiles": {"size": 128, "shift": 64}}
    rules = scheduled_rules(run_snakemake(tiny_run, "-n", overlay=overlay))
    assert {"tile_index", "pseudo_tile_index", "folds", "train_model"} <= rules
    assert not {"ingest", "demo_train_slide", "demo_tables"} & rules


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ({"tiles": {"size": "big"}}, "'big' is not of type 'integer'"),
        ({"tiles": {"sise": 256}}, "'sise' was unexpected"),
        ({"bogus": 1}, "'bogus' was unexpected"),
    ],
)
def test_bad_config_is_rejected_before_any_job(tmp_path, overlay, message):
    result = run_snakemake(tmp_path, "-n", overlay=overlay, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_submission_follows_sample_submission(tiny_run):
    sample = pd.read_csv(tiny_run / "results/demo/data/sample_submission.csv", dtype=str)
    submission = pd.read_csv(tiny_run / "results/submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["id", "predicted"]
    assert list(submission["id"]) == list(sample["id"]), "ids and order of sample_submission.csv"
    for stage in ("stage1", "stage2"):
        for fold in range(4):
            metrics = pd.read_csv(tiny_run / f"results/models/{stage}/fold{fold}/metrics.csv")
            assert list(metrics["epoch"]) == [1]
    pseudo = sorted(p.stem for p in (tiny_run / "results/pseudo").glob("*.zarr"))
    external = sorted(p.stem for p in (tiny_run / "results/demo/data/external").glob("*.tiff"))
    assert pseudo == sorted([*sample["id"], *external]), "only test and external slides are pseudo-labelled"


def test_threshold_change_reruns_only_the_submission(tiny_run):
    result = run_snakemake(tiny_run, "-n", overlay={**TINY, "inference": {**TINY["inference"], "threshold": 0.4}})
    assert scheduled_rules(result) == {"write_submission", "objects", "objects_summary", "submission"}


def test_test_and_external_slides_get_their_objects(tiny_run):
    """One GeoJSON (QuPath FeatureCollection) and table per test and external slide; the summary counts them."""
    sample = pd.read_csv(tiny_run / "results/demo/data/sample_submission.csv", dtype=str)
    external = sorted(p.stem for p in (tiny_run / "results/demo/data/external").glob("*.tiff"))
    summary = pd.read_csv(tiny_run / "results/objects/summary.csv", dtype={"slide": str})
    assert sorted(summary["slide"]) == sorted([*sample["id"], *external])
    for row in summary.itertuples():
        collection = json.loads((tiny_run / f"results/objects/{row.slide}.geojson").read_text())
        table = pd.read_csv(tiny_run / f"results/objects/{row.slide}.csv")
        assert collection["type"] == "FeatureCollection"
        assert len(collection["features"]) == len(table) == row.objects
        assert row.mpp == 0.5 and "assumed data.mpp = 0.5" in row.mpp_source, "the demo's TIFFs state no pixel size"


def test_every_job_records_its_provenance(tiny_run):
    """Each job's last declared output is <first output>.provenance.json: written, and true to the job."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    jobs = scheduled_jobs(run_snakemake(tiny_run, "-n", "--forceall", overlay=TINY))
    jobs = [job for job in jobs if job.outputs]  # target rules have none
    assert len(jobs) > 40
    for job in jobs:
        assert job.outputs[-1] == str(provenance_path(job.outputs[0])), job
        path = tiny_run / job.outputs[-1]
        record = json.loads(path.read_text())
        assert path.read_text() == provenance.dumps(record), "sorted keys, one layout"
        assert record["rule"] == job.rule and record["wildcards"] == dict(job.wildcards)
        assert record["artifact"] == job.outputs[0] and record["outputs"] == sorted(job.outputs[:-1])
        assert re.fullmatch(r"[0-9a-f]{16}", record["code"])
        assert path.stat().st_mtime >= (tiny_run / job.outputs[0]).stat().st_mtime, "written after the artifact"
        assert record["packages"]["python"] and record["packages"]["snakemake"]
        if job.rule == "train_model":
            settings = record["params"]["settings"]
            assert record["seed"] == settings["seed"] == config["seed"]
            if dict(job.wildcards)["stage"] == "stage1":
                assert settings["train"]["epochs"] == TINY["train"]["epochs"]
            assert "num_workers" not in settings["train"] and "state" not in record["params"], "runtime only"
            assert {"torch", "albumentations"} <= set(record["packages"])
        if job.rule in ("train_model", "predict"):
            assert record["device"] == {"device": None, "source": "none"}, "GPU jobs record their device (none here)"
        else:
            assert "device" not in record
        if job.rule == "tile_index":
            assert record["params"]["tiles"] == {**config["tiles"], **TINY["tiles"]}
            assert record["seed"] is None and "torch" not in record["packages"], "a torch-free job"


def test_stage_two_trains_on_the_pseudo_labelled_tiles(tiny_run, tmp_path):
    """With every pixel pseudo-labelled (threshold 0), the pseudo tile index holds masked tiles and stage 2 uses them."""
    run = copy_run(tiny_run, tmp_path / "run")
    overlay = {**TINY, "pseudo": {**TINY.get("pseudo", {}), "threshold": 0.0}}
    run_snakemake(run, "train", overlay=overlay)
    pseudo = [pd.read_parquet(p) for p in sorted((run / "results/tiles/pseudo").glob("*.parquet"))]
    assert pseudo and all(len(t) and t["is_masked"].all() for t in pseudo), "masked pseudo tiles only"

    def training_tiles(stage: str) -> int:
        log = (run / f"results/models/{stage}/fold0/train.log").read_text()
        return int(re.search(r"fold 0 on \w+: (\d+) training tiles", log).group(1))

    assert training_tiles("stage2") > training_tiles("stage1"), "stage 2 adds the pseudo-labelled tiles"
