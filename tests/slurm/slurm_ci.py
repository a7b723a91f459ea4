"""Helpers of tests/slurm/run_slurm_ci.sh (run with the venv's python, from the repository).

overlay PATH                          write the tiny demo overlay (tests/workflow/runner.py TINY) as YAML
resource-args MEM_MB CONFIGFILE...   print extra snakemake arguments (one per line) that fit the
                                      rules' first-attempt memory requests (as Snakemake parses
                                      them with CONFIGFILE...) into a node of MEM_MB; nothing when
                                      they fit already
check WORKDIR OUTPUT LOCAL_WORKDIR NODE
                                      assert that the SLURM run in WORKDIR (snakemake output in
                                      OUTPUT) ran its jobs as SLURM jobs on NODE, and that its
                                      submission equals the local run's byte for byte
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# Rules whose jobs must have gone to SLURM in the tiny demo, and those that
# must have run on the submit host (`localrules` in the Snakefile).
CLUSTER_RULES = {"ingest", "tile_index", "train_model", "predict", "pseudo_labels", "pseudo_tile_index"}
GPU_RULES = {"train_model", "predict"}
LOCAL_RULES = {"demo_train_slide", "demo_test_slide", "demo_external_slide", "demo_tables", "folds", "write_submission"}

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.M)
HEADER = re.compile(r"^\[.*\]\n(local)?(?:rule|checkpoint) (\w+):", re.M)


class CheckFailed(Exception):
    pass


def overlay(path: str) -> None:
    sys.path.insert(0, str(REPO))
    from tests.workflow.runner import TINY

    Path(path).write_text(yaml.safe_dump(TINY, sort_keys=True))


def rule_memory(*configfiles: str) -> dict[str, int]:
    """The first-attempt mem_mb (MB) of each rule that declares one, as Snakemake parses the workflow with ``configfiles``."""
    sys.path.insert(0, str(REPO))
    from tests.workflow.runner import parse_workflow

    with tempfile.TemporaryDirectory() as workdir:
        rules = parse_workflow(Path(workdir), *configfiles)["rules"]
    return {
        name: rule["resources"]["1"]["mem_mb"] for name, rule in rules.items() if "mem_mb" in rule["resources"]["1"]
    }


def resource_args(mem_mb: str, *configfiles: str) -> None:
    """Cap the rules' mem_mb requests at the node's memory (only those that do not fit)."""
    node_mem = int(mem_mb)
    capped = [f"{rule}:mem_mb={node_mem}" for rule, mem in rule_memory(*configfiles).items() if mem > node_mem]
    if capped:
        print("--set-resources")
        print(*capped, sep="\n")


def _comparable(path: Path):
    """A file's bytes; for a provenance record, its JSON without ``device`` (the GPU a job ran on differs by run)."""
    if not path.name.endswith(".provenance.json"):
        return path.read_bytes()
    record = json.loads(path.read_text())
    device = record.pop("device", None)
    if device is not None:
        print(f"{path.name}: device {device}", file=sys.stderr)
    return record


def _scontrol(jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True)
    if out.returncode != 0:
        raise CheckFailed(f"scontrol does not know SLURM job {jobid}: {out.stderr.strip()}")
    fields = {}
    for token in out.stdout.split():
        key, _, value = token.partition("=")
        fields.setdefault(key, value)
    return fields


def check(workdir: str, output: str, local_workdir: str, node: str) -> None:
    workdir, local_workdir = Path(workdir), Path(local_workdir)
    text = Path(output).read_text()
    logdir = workdir / "results/logs/slurm"

    submitted = SUBMITTED.findall(text)
    if not submitted:
        raise CheckFailed("the SLURM run's output names no 'submitted with SLURM jobid': nothing ran as a SLURM job")
    headers = HEADER.findall(text)
    remote = [rule for local, rule in headers if not local]
    local = [rule for local, rule in headers if local]
    if len(submitted) != len(remote):
        raise CheckFailed(
            f"{len(remote)} jobs were scheduled for the cluster but {len(submitted)} SLURM job ids were printed"
        )

    # A retried job (profile: retries) is submitted again under a new SLURM
    # id: the last attempt must have completed; earlier ones are reported.
    last_attempt = {snakemake_id: slurm_id for snakemake_id, slurm_id, _ in submitted}
    retried = sorted(slurm_id for _, slurm_id, _ in submitted if slurm_id not in last_attempt.values())
    by_rule: dict[str, list[str]] = {}
    for _snakemake_id, slurm_id, log in submitted:
        # log: .../results/logs/slurm/rule_{rule}/{wildcards}/%j.log
        match = re.search(r"results/logs/slurm/rule_(\w+?)/", log)
        if not match:
            raise CheckFailed(f"SLURM log {log} is not under results/logs/slurm/rule_*/")
        rule = match.group(1)
        by_rule.setdefault(rule, []).append(slurm_id)
        logfile = Path(log.replace("%j", slurm_id))
        if not logfile.is_absolute():
            logfile = workdir / logfile
        if not logfile.is_file() or logdir not in logfile.parents:
            raise CheckFailed(f"SLURM job {slurm_id} ({rule}): no log file {logfile} under {logdir}")
        job = _scontrol(slurm_id)
        if slurm_id in retried:
            continue
        if job.get("JobState") != "COMPLETED" or job.get("ExitCode") != "0:0":
            raise CheckFailed(
                f"SLURM job {slurm_id} ({rule}): JobState={job.get('JobState')} ExitCode={job.get('ExitCode')}"
            )
        if job.get("NodeList") != node:
            raise CheckFailed(f"SLURM job {slurm_id} ({rule}) ran on {job.get('NodeList')!r}, not {node!r}")
        gpus = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if (rule in GPU_RULES) != ("gpu" in gpus):
            raise CheckFailed(f"SLURM job {slurm_id} ({rule}): GPU request {gpus or 'none'!r} is wrong for this rule")

    missing = CLUSTER_RULES - set(by_rule)
    if missing:
        raise CheckFailed(f"rules {sorted(missing)} never ran as SLURM jobs")
    wrongly_remote = LOCAL_RULES & set(by_rule)
    if wrongly_remote:
        raise CheckFailed(f"local rules {sorted(wrongly_remote)} were submitted to SLURM")
    if not set(local) >= LOCAL_RULES:
        raise CheckFailed(f"local rules {sorted(LOCAL_RULES - set(local))} did not run on the submit host")

    ours = {slurm_id for _, slurm_id, _ in submitted}
    squeue = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T"], capture_output=True, text=True, check=True
    ).stdout
    seen = {line.split("|")[0]: line.split("|")[1] for line in squeue.split()}
    if not ours <= set(seen):
        raise CheckFailed(f"squeue --states=all does not list SLURM jobs {sorted(ours - set(seen))}")

    # The tiny demo's models barely learn, so its submission may be all empty
    # masks: compare what it is made from too, the weights and predictions.
    compared = 0
    for pattern in ("results/models/*/*/model.pt", "results/predictions/**/*"):
        for reference_file in sorted(local_workdir.glob(pattern)):
            if not reference_file.is_file() or reference_file.name == ".snakemake_timestamp":
                continue
            relative = reference_file.relative_to(local_workdir)
            other = workdir / relative
            if not other.is_file() or _comparable(other) != _comparable(reference_file):
                raise CheckFailed(f"{relative} differs between the SLURM run and the local run")
            compared += 1
    if compared == 0:
        raise CheckFailed("the local run has no model.pt or prediction files to compare")

    mine = (workdir / "results/submission.csv").read_bytes()
    reference = (local_workdir / "results/submission.csv").read_bytes()
    if mine != reference:
        raise CheckFailed(
            f"results/submission.csv differs: SLURM run {len(mine)} bytes, local run {len(reference)} bytes "
            f"({workdir} vs {local_workdir})"
        )

    done = "all COMPLETED" if not retried else f"last attempts COMPLETED; WARNING: retried after SLURM jobs {retried}"
    print(f"OK: {len(ours)} SLURM jobs (ids {min(ours, key=int)}..{max(ours, key=int)}), {done} on {node}:")
    for rule in sorted(by_rule):
        print(f"  {rule:18s} {len(by_rule[rule]):3d}  ids {' '.join(sorted(by_rule[rule], key=int))}")
    print(f"  local rules on the submit host: {len(local)} jobs ({', '.join(sorted(set(local)))})")
    print(f"  SLURM logs: {sum(1 for _ in logdir.rglob('*.log'))} files under results/logs/slurm")
    print(f"OK: results/submission.csv of the SLURM run equals the local run's ({len(mine)} bytes),")
    print(f"    and so do {compared} files of model weights and prediction stores")


def main(argv: list[str]) -> int:
    # Each command with its number of arguments (at least that many for resource-args).
    commands = {"overlay": (overlay, 1), "resource-args": (resource_args, 2), "check": (check, 4)}
    at_least = {"resource-args"}
    if (
        not argv
        or argv[0] not in commands
        or len(argv) - 1 < commands[argv[0]][1]
        or (argv[0] not in at_least and len(argv) - 1 != commands[argv[0]][1])
    ):
        print(__doc__, file=sys.stderr)
        return 2
    function, _ = commands[argv[0]]
    try:
        function(*argv[1:])
    except CheckFailed as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
