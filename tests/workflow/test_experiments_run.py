"""Two experiments through a real, smallest run: both train, the test slide's prediction averages both.

Kept small (2 train slides, 1 fold, 1 test slide, 1 epoch, no pseudo-labels,
tiny networks): it adds well under a minute to the slow suite.
"""

import json

import pandas as pd
import pytest

from tests.workflow.runner import TINY, run_snakemake
from tilepipe.config import resolve
from tilepipe.demo.plan import plan_demo

pytestmark = pytest.mark.slow

UNETPP = "results/experiments/unetpp"
DEMO = {**TINY["demo"], "train_patients": 2, "slides_per_patient": 1, "test_slides": 1}
DEMO.update(external_slides=0, polygon_slides=0)


def overlay() -> dict:
    """TINY with two slides in one fold, and a second experiment: smp's UnetPlusPlus on resnet18."""
    config = resolve({"demo": DEMO})
    train = [s for s in plan_demo(config["demo"], config["seed"]) if s.split == "train"]
    return {
        **TINY,
        "demo": DEMO,
        "folds": {"patients": [[train[0].patient]]},
        "pseudo": {"enabled": False},
        "inference": {**TINY["inference"], "tta": ["none"]},
        "experiments": {
            "main": {},
            "unetpp": {"model": {"architecture": "UnetPlusPlus", "encoder": "resnet18"}},
        },
    }


def test_two_experiments_train_and_the_test_prediction_averages_both(tmp_path):
    config = overlay()
    run_snakemake(tmp_path, "submission", "results/eval/experiments.csv", overlay=config)
    for root in ("results", UNETPP):
        assert (tmp_path / root / "models/stage1/fold0/model.pt").is_file()
        assert (tmp_path / root / "benchmarks/train/stage1/fold0.tsv").is_file()
    test_slide = pd.read_csv(tmp_path / "results/submission.csv", dtype=str)["id"].item()
    record = json.loads((tmp_path / f"results/predictions/stage1/{test_slide}.zarr.provenance.json").read_text())
    assert sorted(record["checkpoints"]) == sorted(
        ["results/models/stage1/fold0/model.pt", f"{UNETPP}/models/stage1/fold0/model.pt"]
    ), "both members' fold models"
    log = (tmp_path / f"results/logs/predict/stage1/{test_slide}.log").read_text()
    assert f"{UNETPP}/models/stage1/fold0/model.pt" in log and "results/models/stage1/fold0/model.pt" in log
    table = pd.read_csv(tmp_path / "results/eval/experiments.csv")
    assert list(table["experiment"]) == ["main", "unetpp"]
    assert list(table["architecture"]) == ["unet_1st_place", "UnetPlusPlus"]
    assert list(table["ensemble_weight"]) == [0.5, 0.5]
    assert (table["parameters"] > 0).all() and table["parameters"].nunique() == 2
    assert (table["train_seconds"] > 0).all() and (table["predict_seconds"] > 0).all()
    assert table["mean_dice"].between(0, 1).all()
    # snakemake --report: each experiment's out-of-fold tables, told apart by their "models" label.
    run_snakemake(tmp_path, "--report", "report.html", "submission", "results/eval/experiments.csv", overlay=config)
    report = (tmp_path / "report.html").read_text()
    for root in ("results", UNETPP):
        assert report.count(f'"models": "{root}", "stage": "stage1"') == 3, root
