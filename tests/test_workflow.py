"""End to end: the tiny demo through the default target, caching and config errors."""

import pandas as pd
import pytest

from tests.conftest import TINY, run_snakemake
from tilepipe.store import SlideStore

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
    result = run_snakemake(tiny_run, "-n", overlay=overlay)
    out = result.stdout + result.stderr
    assert "tile_index" in out and "folds" in out
    assert "ingest" not in out


@pytest.mark.parametrize(
    "overlay, message",
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
    out = result.stdout + result.stderr
    assert "write_submission" in out
    for rule in ("predict", "train_model", "ingest", "tile_index", "pseudo_labels"):
        assert f"rule {rule}:" not in out
