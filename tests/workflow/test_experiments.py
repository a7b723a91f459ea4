"""Named experiments in the DAG: where their jobs write, and what a change of one experiment reruns.

Dry runs only: a run is made to look finished by ``touch_run`` (placeholder
outputs, metadata recorded by ``snakemake --touch``), then a config change
is dry-run (about 30 s in all, so not marked slow).
"""

import copy
import re
from collections import Counter

import pytest

from tests.workflow.runner import run_snakemake, scheduled_jobs, touch_run

UNETPP = "results/experiments/unetpp"
TWO = {
    "experiments": {
        "main": {},
        "unetpp": {"model": {"architecture": "UnetPlusPlus", "encoder": "resnet18"}, "train": {"lr": 2e-3}},
    }
}
PARAMS_CHANGED = "Params have changed since last execution"

# The default demo's jobs of `snakemake -n --forceall all` (8 train, 2 test, 1 external slide; 4 folds;
# stages 1 and 2): as before named experiments, plus the one eval_experiments job.
DEFAULT_JOBS = {
    "demo_external_slide": 1,
    "demo_test_slide": 2,
    "demo_train_slide": 8,
    "demo_tables": 1,
    "ingest": 11,
    "tile_index": 11,
    "folds": 1,
    "train_model": 8,
    "plot_training": 2,
    "predict": 22,
    "eval_slide": 16,
    "plot_overlay": 20,
    "pseudo_labels": 3,
    "eval_stage": 2,
    "pseudo_tile_index": 3,
    "plot_slide_dice": 2,
    "objects": 3,
    "write_submission": 1,
    "eval_submission": 1,
    "objects_summary": 1,
    "eval_experiments": 1,
    "eval_summary": 1,
    "plot_gate_sweep": 1,
    "plot_threshold_sweep": 1,
    "all": 1,
}


def wildcard(job, name):
    return dict(job.wildcards).get(name)


def test_the_default_dag_keeps_its_jobs_and_paths(tmp_path):
    jobs = scheduled_jobs(run_snakemake(tmp_path, "-n", "--forceall", "all"))
    assert Counter(job.rule for job in jobs) == DEFAULT_JOBS
    outputs = [o for job in jobs for o in job.outputs]
    assert not [o for o in outputs if "experiments/" in o]
    assert {o for job in jobs if job.rule == "train_model" for o in job.outputs if o.endswith("model.pt")} == {
        f"results/models/{stage}/fold{k}/model.pt" for stage in ("stage1", "stage2") for k in range(4)
    }
    predictions = {job.outputs[0] for job in jobs if job.rule == "predict"}
    assert all(re.fullmatch(r"results/predictions/stage[12]/\w+\.zarr", p) for p in predictions)
    assert {
        o for job in jobs if job.rule == "eval_stage" for o in job.outputs if o.endswith(".csv") and "dice_" in o
    } == {
        "results/eval/dice_stage1.csv",
        "results/eval/dice_stage2.csv",
    }


@pytest.fixture(scope="module", params=[False, True], ids=["pseudo_off", "pseudo_on"])
def two_experiments(request, tmp_path_factory):
    """A run of two experiments made to look finished; returns (its folder, its overlay, its jobs)."""
    overlay = {**copy.deepcopy(TWO), "pseudo": {"enabled": request.param}}
    workdir = tmp_path_factory.mktemp("experiments")
    return workdir, overlay, touch_run(workdir, "all", overlay=overlay)


def rerun_after_lr_change(two_experiments):
    workdir, overlay, jobs = two_experiments
    changed = copy.deepcopy(overlay)
    changed["experiments"]["unetpp"]["train"]["lr"] = 4e-3
    return jobs, scheduled_jobs(run_snakemake(workdir, "-n", "all", overlay=changed))


def test_two_experiments_write_side_by_side(two_experiments):
    _, overlay, jobs = two_experiments
    stages = ["stage1", "stage2"] if overlay["pseudo"]["enabled"] else ["stage1"]
    trained = {o for job in jobs if job.rule == "train_model" for o in job.outputs if o.endswith("model.pt")}
    assert trained == {
        f"{root}/models/{stage}/fold{k}/model.pt" for root in ("results", UNETPP) for stage in stages for k in range(4)
    }
    # Test and external slides: one prediction per stage, by both experiments' fold models.
    test_predictions = [j for j in jobs if j.rule == "predict" and wildcard(j, "root") == "results"]
    evaluated = {o for job in jobs for o in job.outputs if o.startswith(f"{UNETPP}/eval/dice_") and o.endswith(".csv")}
    assert evaluated == {f"{UNETPP}/eval/dice_{stages[-1]}.csv"}, "the final stage, for eval_experiments"
    assert len(test_predictions) == len(stages) * (8 + 3), "main's out-of-fold ones and the ensemble's test/external"
    assert sum(j.rule == "predict" and wildcard(j, "root") == UNETPP for j in jobs) == 8, "its final stage out of fold"
    assert sum(j.rule == "eval_experiments" for j in jobs) == 1


def test_an_lr_change_of_one_experiment_reruns_only_its_jobs_and_the_ensembles(two_experiments):
    jobs, rerun = rerun_after_lr_change(two_experiments)
    pseudo = two_experiments[1]["pseudo"]["enabled"]
    counts = Counter(job.rule for job in rerun)
    # Its stage-1 training (params changed), its out-of-fold predictions and their eval.
    unetpp_train = [j for j in rerun if j.rule == "train_model" and wildcard(j, "root") == UNETPP]
    assert {wildcard(j, "stage") for j in unetpp_train if PARAMS_CHANGED in j.reason} == {"stage1"}
    assert sum(PARAMS_CHANGED in j.reason for j in rerun) == 4, "only its four stage-1 folds' params changed"
    # What the ensemble feeds: test/external predictions, submission, objects, overlays of test slides.
    main = [j for j in rerun if wildcard(j, "root") == "results"]
    if not pseudo:
        assert counts == {
            "train_model": 4,
            "predict": 8 + 3,  # unetpp's out-of-fold, the ensemble's test and external
            "eval_slide": 8,
            "eval_stage": 1,
            "write_submission": 1,
            "objects": 3,
            "objects_summary": 1,
            "eval_submission": 1,
            "eval_summary": 1,
            "eval_experiments": 1,
            "plot_overlay": 2,  # the test slides' (the ensemble's predictions)
            "all": 1,
        }
        assert {j.rule for j in main} == {"predict"}
        assert all(wildcard(j, "slide") not in train_slides(jobs) for j in main), "main's out-of-fold ones stay"
    else:
        # Known deviation: stage 2 of every experiment trains on the ensemble's pseudo-labels.
        main_train = [j for j in main if j.rule == "train_model"]
        assert {wildcard(j, "stage") for j in main_train} == {"stage2"} and len(main_train) == 4
        assert all("Input files updated by another job" in j.reason for j in main_train)
        main_stage1 = [j for j in main if wildcard(j, "stage") == "stage1"]
        assert {j.rule for j in main_stage1} == {"predict"}
        assert all(wildcard(j, "slide") not in train_slides(jobs) for j in main_stage1), "main's stage 1 stays"
    untouched = {"demo_train_slide", "demo_test_slide", "demo_tables", "ingest", "tile_index", "folds"}
    assert not untouched & set(counts)


def train_slides(jobs) -> set[str]:
    return {wildcard(j, "slide") for j in jobs if j.rule == "tile_index"} - {
        wildcard(j, "slide") for j in jobs if j.rule == "objects"
    }


def test_each_experiment_asks_for_its_own_training_memory(tmp_path):
    """train_model's mem_mb comes from each experiment's model and train sections (tilepipe.resources)."""
    from tilepipe.config import resolve
    from tilepipe.experiments import experiment_sections
    from tilepipe.resources import training_memory_mb

    overlay = copy.deepcopy(TWO)
    overlay["experiments"]["unetpp"]["train"]["batch_size"] = 32
    result = run_snakemake(tmp_path, "-n", "train", overlay=overlay)
    asked = {}
    for block in re.split(r"\n(?=\[)", result.stdout + result.stderr):
        if "rule train_model:" in block:
            root = "results" if "output: results/models/" in block else UNETPP
            asked.setdefault(root, set()).add(int(re.search(r"mem_mb=(\d+)", block).group(1)))
    config = resolve(overlay)
    sections = {root: experiment_sections(config, name) for root, name in (("results", "main"), (UNETPP, "unetpp"))}
    expected = {root: {training_memory_mb(s["model"], s["train"])} for root, s in sections.items()}
    assert asked == expected and expected["results"] != expected[UNETPP]


def test_unequal_weights_reach_the_ensembles_predictions_only(tmp_path):
    """predict's params for a test slide carry one weight per fold model, member by member; out-of-fold ones none."""
    import yaml

    from tests.workflow.runner import REPO, parse_workflow

    overlay = copy.deepcopy(TWO)
    overlay["ensemble"] = {"experiments": ["unetpp", "main"], "weights": [3, 1]}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    parsed = parse_workflow(tmp_path, REPO / "config.yaml", path)
    assert parsed["predict_inference"]["test"]["weights"] == [0.75] * 4 + [0.25] * 4
    assert "weights" not in parsed["predict_inference"]["oof"]
    assert parsed["rules"]["apply_predict"]["params"]["inference"]["weights"] == [0.75] * 4 + [0.25] * 4
    equal = parse_workflow(tmp_path, REPO / "config.yaml", REPO / "configs/experiments.yaml")
    assert "weights" not in equal["predict_inference"]["test"], "equal weights: the plain mean, params as before"


def test_a_prediction_by_the_ensemble_asks_memory_for_every_member(tmp_path):
    """predict's mem_mb: 8 GB per member for the ensemble's test and external slides, 8 GB out of fold."""
    result = run_snakemake(tmp_path, "-n", "--forceall", "submission", "eval", overlay=TWO)
    asked = {}
    for block in re.split(r"\n(?=\[)", result.stdout + result.stderr):
        if "rule predict:" in block:
            output = re.search(r"output: (\S+?\.zarr)", block).group(1)
            asked[output] = int(re.search(r"mem_mb=(\d+)", block).group(1))
    predicted = {wildcard(j, "slide") for j in scheduled_jobs(result) if j.rule == "objects"}
    ensemble = {
        p: m
        for p, m in asked.items()
        if re.search(r"^results/predictions/stage\d/(\w+)\.zarr$", p)
        and p.split("/")[-1].removesuffix(".zarr") in predicted
    }
    out_of_fold = {p: m for p, m in asked.items() if p not in ensemble}
    assert ensemble and set(ensemble.values()) == {16000}
    assert any(p.startswith(UNETPP) for p in out_of_fold) and set(out_of_fold.values()) == {8000}
