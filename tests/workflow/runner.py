"""Running the workflow on a tiny demo in a temporary folder, and reading its dry runs.

Plain functions, imported by the workflow tests, benchmarks/bench_dry_run.py
and tests/slurm; the pytest fixtures built on them are in tests/workflow/conftest.py.
"""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# The smallest demo that still exercises every stage: 4 patients x 2 slides,
# a tiny network trained for one epoch, one TTA flip pair.
TINY = {
    "demo": {"height": 640, "width": 768, "glomerulus_diameter": [40, 110]},
    "ingest": {"chunk": 128, "min_level_size": 256},
    "tiles": {"size": 256, "shift": 128},
    "model": {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8},
    "train": {"epochs": 1, "batch_size": 8, "input_size": 64},
    "inference": {"tta": ["none", "hflip"], "batch_size": 8},
    "pseudo": {"epochs": 1},
}


def snakemake_command(workdir: Path, *args: str, overlay: Path | None = None) -> list[str]:
    """The command that runs this repository's workflow in ``workdir`` on 2 cores, config.yaml plus ``overlay``."""
    configfiles = [str(REPO / "config.yaml"), *([str(overlay)] if overlay is not None else [])]
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *configfiles,
        "--cores",
        "2",
        *args,
    ]


def run_snakemake(workdir: Path, *args: str, overlay: dict | None = None, check: bool = True):
    """Run the workflow in ``workdir`` with config.yaml plus ``overlay``; return the CompletedProcess."""
    path = None
    if overlay is not None:
        path = workdir / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
    cmd = snakemake_command(workdir, *args, overlay=path)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


# ------------------------------------------------------------ reading dry runs
@dataclass(frozen=True)
class ScheduledJob:
    """One job of a dry run (``snakemake -n``): its rule, wildcards and the reason Snakemake gives."""

    rule: str
    wildcards: tuple[tuple[str, str], ...]
    reason: str
    outputs: tuple[str, ...] = ()


_JOB_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t]+\S.*(?:\n|$))*)", re.MULTILINE)


def scheduled_jobs(result) -> list[ScheduledJob]:
    """The jobs a dry run's output (a CompletedProcess of ``run_snakemake(..., "-n")``) would run."""
    jobs = []
    for match in _JOB_BLOCK.finditer(result.stdout + "\n" + result.stderr):
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", match.group(2), re.MULTILINE))
        wildcards = tuple(tuple(item.split("=", 1)) for item in fields.get("wildcards", "").split(", ") if "=" in item)
        outputs = tuple(fields["output"].split(", ")) if "output" in fields else ()
        jobs.append(ScheduledJob(match.group(1), wildcards, fields.get("reason", ""), outputs))
    return jobs


def scheduled_rules(result) -> set[str]:
    """The rules with at least one job in a dry run's output."""
    return {job.rule for job in scheduled_jobs(result)}


def nothing_to_do(result) -> bool:
    return "Nothing to be done" in result.stdout + result.stderr


def touch_run(workdir: Path, *targets: str, overlay: dict | None = None) -> list[ScheduledJob]:
    """Make ``workdir`` look like a finished run of ``targets`` without running a job; return the jobs.

    Every output of a forced dry run gets an empty placeholder (a folder for
    ``.zarr``), then ``snakemake --touch`` records each job's params, code
    and inputs as if it had run, so a later dry run shows what a config
    change would rerun (about 10 s; the outputs hold nothing).
    """
    jobs = scheduled_jobs(run_snakemake(workdir, "-n", "--forceall", *targets, overlay=overlay))
    for job in jobs:
        for output in job.outputs:
            path = workdir / output
            path.parent.mkdir(parents=True, exist_ok=True)
            if output.endswith(".zarr"):
                path.mkdir(exist_ok=True)
            else:
                path.touch()
    run_snakemake(workdir, "--touch", "--forceall", *targets, overlay=overlay)
    return jobs


def copy_run(source: Path, destination: Path) -> Path:
    """Copy a finished run folder (mtimes kept, symlinks as symlinks), without the resumable
    training states in results/state (large, and no declared output); return ``destination``."""
    shutil.copytree(source, destination, symlinks=True, ignore=shutil.ignore_patterns("state"))
    return destination


def write_kaggle_layout(root: Path, train_patients: list[int]) -> Path:
    """A folder in the Kaggle layout at ``root``, one train slide per patient and two test slides; returns it.

    The TIFFs are empty: a dry run never opens them.
    """
    train = [f"tr{i}" for i in range(len(train_patients))]
    for split, ids in (("train", train), ("test", ["te0", "te1"])):
        (root / split).mkdir(parents=True)
        for slide_id in ids:
            (root / split / f"{slide_id}.tiff").write_bytes(b"")
    (root / "train.csv").write_text("id,encoding\n" + "".join(f"{i},1 5\n" for i in train))
    (root / "sample_submission.csv").write_text("id,predicted\nte1,\nte0,\n")
    rows = [f"{i}.tiff,100,100,{p}" for i, p in zip(train, train_patients, strict=True)] + [
        "te0.tiff,100,100,1",
        "te1.tiff,100,100,2",
    ]
    (root / "HuBMAP-20-dataset_information.csv").write_text(
        "image_file,width_pixels,height_pixels,patient_number\n" + "\n".join(rows) + "\n"
    )
    return root


def parse_workflow(workdir: Path, *configfiles: str | Path) -> dict:
    """What Snakemake parses from this repository's workflow with ``configfiles`` (tests/workflow/parse_rules.py).

    Runs no job (about 3 s); raises AssertionError with Snakemake's output when parsing fails.
    """
    out = Path(workdir) / "parsed_rules.json"
    script = Path(__file__).with_name("parse_rules.py")
    command = [sys.executable, str(script), str(REPO / "Snakefile"), str(workdir), str(out), *map(str, configfiles)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())
