"""The local `gpu` resource: with `--cores 8 --resources gpu=1` no two GPU jobs run at once.

Design. Concurrency cannot be seen in a dry run, and a stand-in Snakefile would
not test this workflow, so the test runs the real rules with the real default
profile (tests/conftest.py run_snakemake picks up profiles/default) on a copy
of the finished tiny demo (the session fixture `tiny_run`, which the workflow
tests build anyway), forcing only what is needed:

    snakemake results/models/stage1/fold{k}/model.pt ... --cores 8
              --forcerun tile_index train_model --resources gpu=1

That reruns the 8 `tile_index` jobs (1 thread, no GPU), `folds`, and the
stage-1 `train_model` jobs (one per fold, `gpu=1`, one epoch of the tiny
model, at most 2 threads each). All train_model jobs become ready at the same
moment (when `folds` ends) and 8 cores would hold them all at once, so only
the `gpu` resource can keep them apart. The test reads when each job started and finished from
Snakemake's own log (the "[timestamp]" before "rule X:" and before "Finished
jobid: N", 1 s resolution) and from each train.log (first and last record,
millisecond resolution, inside the job), and asserts:

* the train_model intervals never overlap (by either clock);
* the tile_index jobs did overlap, so jobs did run in parallel with these
  cores: the serial training comes from the GPU limit, not from a lack of
  cores or a serial scheduler.

Cost: about 8 tiny tile-index jobs, folds and 4 one-epoch trainings (about a
minute on 2 cores) on top of the shared fixture.
"""

import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow.runner import TINY, run_snakemake

pytestmark = pytest.mark.slow

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def job_intervals(log: str) -> dict[str, list[tuple[datetime, datetime]]]:
    """(start, end) per job of each rule, from Snakemake's output (second resolution)."""
    stamp = None
    pending: str | None = None  # rule of the job block being read
    starts: dict[str, tuple[str, datetime]] = {}
    ends: dict[str, datetime] = {}
    for line in log.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := START.match(line):
            pending = match.group(1)
            started = stamp
        elif pending and (match := JOBID.match(line)):
            starts[match.group(1)] = (pending, started)
            pending = None
        elif match := FINISHED.match(line):
            ends[match.group(1)] = stamp
    intervals: dict[str, list[tuple[datetime, datetime]]] = {}
    for jobid, (rule, start) in starts.items():
        assert jobid in ends, f"job {jobid} ({rule}) started but never finished"
        intervals.setdefault(rule, []).append((start, ends[jobid]))
    return intervals


def record_interval(train_log: Path) -> tuple[datetime, datetime]:
    """First and last logging record of a training job (millisecond resolution)."""
    stamps = [
        datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        for line in train_log.read_text().splitlines()
        if (match := RECORD.match(line))
    ]
    assert stamps, f"{train_log} has no timestamped records"
    return stamps[0], stamps[-1]


def overlapping_pairs(intervals: list[tuple[datetime, datetime]]) -> int:
    """Pairs of intervals that share time (touching ends do not count)."""
    ordered = sorted(intervals)
    return sum(1 for i, a in enumerate(ordered) for b in ordered[i + 1 :] if b[0] < a[1])


def test_gpu_jobs_never_run_at_once(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    folds = sorted(pd.read_csv(workdir / "results/folds.csv")["fold"].unique())
    folds = [f for f in folds if f >= 0]
    models = [f"results/models/stage1/fold{k}/model.pt" for k in folds]
    assert len(models) >= 2, "the tiny demo needs at least two folds for this test"

    result = run_snakemake(
        workdir,
        *models,
        "--cores",
        "8",
        "--forcerun",
        "tile_index",
        "train_model",
        "--resources",
        "gpu=1",
        overlay=TINY,
    )
    log = result.stdout + result.stderr
    assert "profiles/default" in log, "the default profile was not loaded"
    intervals = job_intervals(log)

    training = intervals.get("train_model", [])
    assert len(training) == len(models), f"expected {len(models)} train_model jobs, saw {len(training)}"
    assert overlapping_pairs(training) == 0, f"GPU jobs overlapped: {sorted(training)}"
    inside = [record_interval(workdir / f"results/models/stage1/fold{k}/train.log") for k in folds]
    assert overlapping_pairs(inside) == 0, f"training records overlapped: {sorted(inside)}"

    tiles = intervals.get("tile_index", [])
    assert len(tiles) >= 2, f"expected the forced tile_index jobs, saw {len(tiles)}"
    assert overlapping_pairs(tiles) > 0, (
        f"no two tile_index jobs overlapped, so --cores 8 ran nothing in parallel: {sorted(tiles)}"
    )
