"""Rerun precision after a finished tiny run: what a change reruns, shown by dry runs.

Every test works on a copy of the shared ``tiny_run`` folder. A config
change reruns the jobs whose params hold it and everything downstream; a
code edit reruns the rules whose script imports the edited module (the
``code`` param, ``tilepipe.provenance.script_code_hash``); a touch reruns
nothing.
"""

import copy
import json
import modulefinder
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.runner import REPO, TINY, copy_run, nothing_to_do, run_snakemake, scheduled_jobs
from tilepipe.provenance import SUFFIX, provenance_path

pytestmark = pytest.mark.slow

PARAMS_CHANGED = "Params have changed since last execution"
UPDATED_BY_JOB = "Input files updated by another job"
# What the workflow needs to parse and plan (a code edit is made in a copy of these).
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "workflow_scripts",
    "config.yaml",
    "tilepipe",
    "envs",
    "profiles",
    "report",
)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny run; tests that touch files put their mtimes back."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("rerun") / "run")


def rules_of_outputs(run: Path) -> dict[str, str]:
    """Every output file of the finished run -> the rule that made it (from the provenance files)."""
    owners = {}
    for path in run.joinpath("results").rglob(f"*{SUFFIX}"):
        record = json.loads(path.read_text())
        for output in [*record["outputs"], str(path.relative_to(run))]:
            owners[output] = record["rule"]
    return owners


def jobs_by_rule(run: Path) -> dict[str, int]:
    """How many jobs of each rule the finished run ran (one provenance file per job)."""
    counts: dict[str, int] = {}
    for path in run.joinpath("results").rglob(f"*{SUFFIX}"):
        rule = json.loads(path.read_text())["rule"]
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def fold_numbers(run: Path) -> list[int]:
    """The folds of the finished run (fold -1, always trained on, is no fold)."""
    folds = pd.read_csv(run / "results/folds.csv")["fold"]
    return sorted(int(f) for f in folds.unique() if f >= 0)


def params_changed_rules(run: Path, result) -> set[str]:
    """The rules ``snakemake --list-changes params`` names, from the files it lists.

    Snakemake 9.27.1 lists, besides every output of a changed job, the last
    output of every unchanged job (``ParamsChange.__or__`` returns a
    no-change record together with its files). Every job rule here declares
    its provenance file last, so a rule counts as named when one of its
    other outputs is listed.
    """
    owners = rules_of_outputs(run)
    listed = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("results/")]
    assert listed, result.stdout + result.stderr
    unknown = [f for f in listed if f not in owners]
    assert not unknown, f"listed files no job of the run made: {unknown}"
    return {owners[f] for f in listed if not f.endswith(SUFFIX)}


# ------------------------------------------------------------------ config
def test_lr_change_reruns_every_training_and_downstream_only(run):
    overlay = copy.deepcopy(TINY)
    overlay["train"]["lr"] = 2 * yaml.safe_load((REPO / "config.yaml").read_text())["train"]["lr"]
    jobs = scheduled_jobs(run_snakemake(run, "-n", overlay=overlay))
    ran = jobs_by_rule(run)
    counts = {rule: sum(j.rule == rule for j in jobs) for rule in {j.rule for j in jobs}}
    downstream = ("predict", "pseudo_labels", "pseudo_tile_index", "write_submission", "objects", "objects_summary")
    assert counts == {"train_model": ran["train_model"], **{r: ran[r] for r in downstream}, "submission": 1}
    folds = fold_numbers(run)
    assert ran["train_model"] == 2 * len(folds), "both stages, every fold"
    assert {j.wildcards for j in jobs if j.rule == "train_model"} == {
        (("root", "results"), ("stage", stage), ("fold", str(fold))) for stage in ("stage1", "stage2") for fold in folds
    }
    for job in jobs:
        if job.rule == "train_model" and ("stage", "stage1") in job.wildcards:
            assert PARAMS_CHANGED in job.reason, job
        else:
            assert job.reason.startswith(UPDATED_BY_JOB), job
    assert not {"demo_train_slide", "demo_tables", "ingest", "tile_index", "folds"} & set(counts)

    listed = run_snakemake(run, "--list-changes", "params", overlay=overlay)
    assert params_changed_rules(run, listed) == {"train_model"}


@pytest.mark.parametrize(
    ("section", "key"),
    [("train", "num_workers"), ("train", "log_every"), ("inference", "batch_size")],
)
def test_runtime_only_setting_change_reruns_nothing(run, section, key):
    """Settings of speed only (tilepipe.config.RUNTIME_KEYS) are no params: changing one schedules nothing."""
    overlay = copy.deepcopy(TINY)
    current = overlay.get(section, {}).get(key, yaml.safe_load((REPO / "config.yaml").read_text())[section][key])
    overlay.setdefault(section, {})[key] = current + 1
    result = run_snakemake(run, "-n", overlay=overlay)
    assert nothing_to_do(result), scheduled_jobs(result)
    listed = run_snakemake(run, "--list-changes", "params", overlay=overlay)
    assert params_changed_rules(run, listed) == set()


def test_list_changes_names_the_submission_after_a_threshold_change(run):
    overlay = {**TINY, "inference": {**TINY["inference"], "threshold": 0.35}}
    listed = run_snakemake(run, "--list-changes", "params", overlay=overlay)
    assert params_changed_rules(run, listed) == {"write_submission", "objects"}, "the objects are cut at it too"
    assert "results/submission.csv" in listed.stdout.split()


# -------------------------------------------------------------------- code
class _TilepipeFinder(modulefinder.ModuleFinder):
    """The standard library's import tracer, kept to the tilepipe package."""

    def import_hook(self, name, caller=None, fromlist=None, level=-1):
        if name.split(".")[0] != "tilepipe":
            return None
        return super().import_hook(name, caller, fromlist, level)


def rules_importing(repo: Path, module_file: Path) -> set[str]:
    """Rules whose script imports ``module_file`` (directly or not), found by modulefinder, not by tilepipe."""
    scripts = {}
    for smk in repo.joinpath("rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*(?:rule \w+:|use rule ))", text):
            rule = re.match(r"\s*rule (\w+):", block)
            script = re.search(r'script:\s*"\.\./workflow_scripts/([\w.]+)"', block)
            if rule and script:
                scripts[rule.group(1)] = script.group(1)
        for parent, child in re.findall(r"use rule (\w+) as (\w+)", text):
            scripts[child] = scripts[parent]
    users = set()
    for rule, script in scripts.items():
        finder = _TilepipeFinder(path=[str(repo)])
        finder.run_script(str(repo / "workflow_scripts" / script))
        if any(m.__file__ and Path(m.__file__) == module_file for m in finder.modules.values()):
            users.add(rule)
    return users


def test_code_edit_reruns_exactly_the_rules_that_import_it(run, tmp_path):
    """Edit tilepipe/data/tile_index.py in a copy of the workflow; the finished run sees the copy's code."""
    repo = tmp_path / "repo"
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            repo.mkdir(exist_ok=True)
            shutil.copy2(source, repo / name)
    module = repo / "tilepipe/data/tile_index.py"
    # A new constant: a change of the module's behaviour, not only of its text.
    module.write_text(module.read_text() + "\n_EDITED_BY_TEST_RERUN = True\n")
    expected = rules_importing(repo, module) & set(jobs_by_rule(run))
    assert expected == {"tile_index", "pseudo_tile_index"}, "the edit's reach in this workflow"

    def run_copy(*args):
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(repo / "Snakefile"),
            "--directory",
            str(run),
            "--configfile",
            str(repo / "config.yaml"),
            str(run / "overlay.yaml"),
            "--cores",
            "2",
            *args,
        ]
        (run / "overlay.yaml").write_text(yaml.safe_dump(TINY))
        env = {**os.environ, "PYTHONPATH": str(repo)}
        result = subprocess.run(command, capture_output=True, text=True, cwd=run, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    jobs = scheduled_jobs(run_copy("-n"))
    # A job below another rerun job shows only that reason (Snakemake skips its params check).
    by_code = {j.rule for j in jobs if PARAMS_CHANGED in j.reason}
    assert by_code and by_code <= expected, jobs
    for job in jobs:
        assert job.rule in expected or job.reason.startswith(UPDATED_BY_JOB), job
    ran = jobs_by_rule(run)
    for rule in expected:
        assert sum(j.rule == rule for j in jobs) == ran[rule], f"every {rule} job reruns"
    assert params_changed_rules(run, run_copy("--list-changes", "params")) == expected


# ------------------------------------------------------------------- touch
def _touch_and_dry_run(run: Path, relative: str):
    path = run / relative
    before = path.stat()
    os.utime(path)  # now: newer than every output made from it
    try:
        return run_snakemake(run, "-n", overlay=TINY)
    finally:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_touching_an_intermediate_reruns_nothing(run):
    parquet = sorted(run.glob("results/tiles/*.parquet"))[0]
    result = _touch_and_dry_run(run, str(parquet.relative_to(run)))
    assert nothing_to_do(result), scheduled_jobs(result)


PROFILE = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())


@pytest.mark.xfail(
    "max-checksum-file-size" not in PROFILE,
    strict=True,
    reason="Snakemake compares checksums only of inputs below --max-checksum-file-size (1 MB by default): a "
    "touched larger TIFF reruns ingest and all after it unless profiles/default raises the limit",
)
def test_touching_an_input_tiff_reruns_nothing(run):
    tiffs = sorted(run.glob("results/demo/data/*/*.tiff"), key=lambda p: p.stat().st_size)
    largest = tiffs[-1]
    assert largest.stat().st_size > 1_000_000, "a TIFF above Snakemake's default checksum limit"
    result = _touch_and_dry_run(run, str(largest.relative_to(run)))
    assert nothing_to_do(result), scheduled_jobs(result)


def test_a_store_rewritten_with_the_same_content_reruns_nothing(run, tmp_path):
    """A forced ingest or a restored backup gives the store new mtimes, not new content: nothing downstream reruns."""
    store = sorted(run.glob("results/slides/*.zarr"))[0]
    record = provenance_path(store)
    before = store.stat().st_mtime_ns, record.read_text()
    run_snakemake(run, str(store.relative_to(run)), "--force", overlay=TINY)
    assert store.stat().st_mtime_ns > before[0], "the store was written again"
    assert record.read_text() == before[1], "with the same content digest"
    result = run_snakemake(run, "-n", overlay=TINY)
    assert nothing_to_do(result), scheduled_jobs(result)

    backup = tmp_path / "backup.zarr"
    shutil.copytree(store, backup)
    shutil.rmtree(store)
    shutil.copytree(backup, store, copy_function=shutil.copy)  # restored with new mtimes
    result = run_snakemake(run, "-n", overlay=TINY)
    assert nothing_to_do(result), scheduled_jobs(result)


def test_a_store_with_new_content_reruns_what_reads_it(run):
    store = sorted(run.glob("results/slides/*.zarr"))[0]
    record = provenance_path(store)
    original = record.read_text()
    changed = json.loads(original)
    changed["content"][str(store.relative_to(run))] = "sha256:" + "0" * 64
    record.write_text(json.dumps(changed))
    try:
        result = run_snakemake(run, "-n", overlay=TINY)
    finally:
        record.write_text(original)
    rerun = {job.rule for job in scheduled_jobs(result)}
    assert {"tile_index", "predict", "train_model"} <= rerun
    assert "ingest" not in rerun
