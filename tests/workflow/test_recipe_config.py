"""configs/hubmap_1st_place.yaml: the full recipe plans the expected DAG on a Kaggle-layout folder."""

import pytest
import yaml

from tests.workflow.runner import REPO, run_snakemake, scheduled_jobs, write_kaggle_layout

RECIPE_PATIENTS = [63921, 68250, 65631, 67177]


@pytest.fixture
def kaggle_layout(tmp_path):
    """A folder in the Kaggle layout (empty TIFFs: a dry run never opens them)."""
    return write_kaggle_layout(tmp_path / "kaggle", RECIPE_PATIENTS + [60000, 60001])


def test_recipe_overlay_is_faithful_to_the_first_place_code():
    """Each value that changes results, as the 1st-place code has it (src/02_train, src/05_*, their inference)."""
    recipe = yaml.safe_load((REPO / "configs/hubmap_1st_place.yaml").read_text())
    assert (recipe["tiles"]["size"], recipe["tiles"]["shift"]) == (1024, 512)
    assert recipe["train"]["lr"] == 1e-4 and recipe["train"]["min_lr"] == 1e-6  # Adam, CosineLR step_size_min
    assert recipe["train"]["weight_decay"] == 1e-5 and recipe["train"]["augmentations"] == "recipe"
    assert recipe["loss"] == {"bce": 1.0, "lovasz": 1.0, "deep": 0.1, "clf": 1.0}
    assert recipe["sampling"]["min_img_std"] == 10  # std_img > 10, for labelled and pseudo-labelled tiles
    assert recipe["inference"]["tta"] == ["none", "hflip", "vflip", "hvflip"]
    assert recipe["inference"]["amp"] is False  # FP16: False at inference
    assert recipe["inference"]["min_tissue"] is None  # every window is predicted
    assert recipe["inference"]["threshold"] == 0.5 and recipe["pseudo"]["threshold"] == 0.5
    assert recipe["pseudo"]["init"] == "scratch" and recipe["pseudo"]["epochs"] is None
    model = recipe["model"]
    assert (model["center_channels"], model["decoder_channels"]) == (512, 64)
    assert all(model[k] for k in ("cbam", "hypercolumns", "deep_supervision", "clf_head"))


def test_recipe_overlay_plans_four_gpu_folds(tmp_path, kaggle_layout):
    recipe = yaml.safe_load((REPO / "configs/hubmap_1st_place.yaml").read_text())
    assert recipe["folds"]["patients"] == [[p] for p in RECIPE_PATIENTS]
    assert recipe["model"]["encoder"] == "se_resnext101_32x4d"
    assert (recipe["tiles"]["size"], recipe["train"]["input_size"], recipe["train"]["batch_size"]) == (1024, 320, 16)
    assert recipe["train"]["epochs"] == 20 and recipe["train"]["amp"] is True
    overlay = tmp_path / "recipe.yaml"
    overlay.write_text(yaml.safe_dump({**recipe, "data": {"root": str(kaggle_layout)}}))
    result = run_snakemake(tmp_path, "train", "-n", "--configfile", str(REPO / "config.yaml"), str(overlay))
    out = result.stdout + result.stderr
    for fold in range(4):
        assert f"results/models/stage1/fold{fold}/model.pt" in out
    assert "fold4" not in out
    assert "demo_" not in out, "real data never runs the demo generator"


def test_fold_patients_missing_from_the_data_fail_before_any_job(tmp_path, kaggle_layout):
    """The recipe's patient lists on another Kaggle-layout folder: refused at parse time, naming the file."""
    recipe = yaml.safe_load((REPO / "configs/hubmap_1st_place.yaml").read_text())
    recipe["folds"]["patients"] = [[63921], [68250], [65631], [99999]]
    overlay = tmp_path / "recipe.yaml"
    overlay.write_text(yaml.safe_dump({**recipe, "data": {"root": str(kaggle_layout)}}))
    result = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config.yaml"), str(overlay), check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "HuBMAP-20-dataset_information.csv: folds.patients[3] names patient 99999" in out
    assert "rule ingest" not in out and "Job stats" not in out


def test_the_published_ensemble_replaces_stage1_training(tmp_path, kaggle_layout):
    """pretrained.stage1: their four fold files become the stage-1 models; stage 2 and the submission follow."""
    weights = tmp_path / "first_place"
    weights.mkdir()
    for fold in range(4):
        (weights / f"model_seed0_fold{fold}_bestscore.pth").write_bytes(b"")  # a dry run never opens them
    recipe = yaml.safe_load((REPO / "configs/hubmap_1st_place.yaml").read_text())
    overlay = tmp_path / "recipe.yaml"
    overlay.write_text(
        yaml.safe_dump({**recipe, "data": {"root": str(kaggle_layout)}, "pretrained": {"stage1": str(weights)}})
    )
    result = run_snakemake(tmp_path, "submission", "-n", "--configfile", str(REPO / "config.yaml"), str(overlay))
    jobs = scheduled_jobs(result)
    trained = sorted(dict(job.wildcards)["stage"] for job in jobs if job.rule == "train_model")
    imported = sorted(dict(job.wildcards)["fold"] for job in jobs if job.rule == "import_pretrained")
    assert trained == ["stage2"] * 4, "no stage-1 training job"
    assert imported == ["0", "1", "2", "3"]
    assert any(job.rule == "write_submission" for job in jobs)
    (weights / "model_seed0_fold3_bestscore.pth").unlink()
    missing = run_snakemake(
        tmp_path, "submission", "-n", "--configfile", str(REPO / "config.yaml"), str(overlay), check=False
    )
    assert missing.returncode != 0
    assert (
        "pretrained.stage1 has no fold3/model.pt or model_seed0_fold3_bestscore.pth" in missing.stdout + missing.stderr
    )
