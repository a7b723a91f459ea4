"""`snakemake -n submission` on a finished run of 20 small slides: how long "nothing to be done" takes.

Makes (once, in ``--cache``) a finished run of a 20-slide demo (5 patients
x 3 train slides, 3 test, 2 external; the tiny sizes of the workflow test,
one epoch), reused by later calls while a dry run of it has nothing to do.
Then times, round-robin in this process, ``--repeats`` calls of each:

* start-up floor: ``snakemake --version`` (Python and Snakemake's own
  imports, plugins included; no Snakefile);
* baseline ``--rerun-triggers mtime``: the cheapest dry run Snakemake does
  (modification times only);
* tilepipe's ``snakemake -n submission``: the default triggers (mtime,
  params, input, code, software-env), as users run it.

Each call is a fresh ``python -m snakemake`` process, as a user's is.
Prints the medians, the ratio, and the markdown row for the "Dry run"
section of docs/benchmarks.md.

    python benchmarks/bench_dry_run.py [--cache benchmarks/data/dry_run_20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.workflow.runner import TINY, snakemake_command

TARGET_SECONDS = 5.0


def overlay() -> dict:
    """TINY with 20 slides: 5 patients x 3 train slides, 3 test and 2 external slides."""
    settings = copy.deepcopy(TINY)
    settings["demo"].update(train_patients=5, slides_per_patient=3, test_slides=3, external_slides=2)
    return settings


def snakemake(workdir: Path, *args: str) -> list[str]:
    return snakemake_command(workdir, *args, overlay=workdir / "overlay.yaml")


def run(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return seconds, result


def nothing_to_do(result: subprocess.CompletedProcess) -> bool:
    return "Nothing to be done" in result.stdout + result.stderr


def finished_run(cache: Path) -> Path:
    """The cached finished 20-slide run, made or brought up to date first if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(overlay())
    if not (cache / "overlay.yaml").is_file() or (cache / "overlay.yaml").read_text() != text:
        (cache / "overlay.yaml").write_text(text)
    _, dry = run(snakemake(cache, "-n", "submission"), cache)
    if not nothing_to_do(dry):
        print(f"making the finished 20-slide run in {cache} (minutes)...", flush=True)
        seconds, _ = run(snakemake(cache, "submission"), cache)
        print(f"made in {seconds:.0f} s", flush=True)
    slides = sorted(p.stem for p in cache.glob("results/slides/*.zarr"))
    assert len(slides) == 20, f"expected 20 slide stores, found {len(slides)}"
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO / "benchmarks/data/dry_run_20",
        help="folder of the finished 20-slide run (made once; default benchmarks/data/dry_run_20)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (default 5)")
    args = parser.parse_args()

    workdir = finished_run(args.cache.resolve())
    variants = {
        "start-up floor (--version)": [sys.executable, "-m", "snakemake", "--version"],
        "baseline: -n --rerun-triggers mtime": snakemake(workdir, "-n", "submission", "--rerun-triggers", "mtime"),
        "tilepipe: -n (default triggers)": snakemake(workdir, "-n", "submission"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, command in variants.items():
            seconds, result = run(command, workdir)
            if name.startswith(("baseline", "tilepipe")) and not nothing_to_do(result):
                raise SystemExit(f"{name}: the finished run has something to do:\n{result.stdout}\n{result.stderr}")
            times[name].append(seconds)

    median = {name: statistics.median(values) for name, values in times.items()}
    baseline, ours = median["baseline: -n --rerun-triggers mtime"], median["tilepipe: -n (default triggers)"]
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"{args.repeats} calls each, round-robin; 'Nothing to be done' confirmed on every dry run"
    )
    for name, values in times.items():
        print(f"  {name:40s} median {median[name]:.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    print(
        f"default triggers / mtime only: {ours / baseline:.2f}x; target <= {TARGET_SECONDS:g} s: "
        f"{'met' if ours <= TARGET_SECONDS else 'MISSED'}"
    )
    print()
    print(
        f"| run | target | tilepipe `-n submission` (median of {args.repeats}) | baseline `--rerun-triggers mtime` | ratio | start-up floor | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| 20 slides, finished | <= {TARGET_SECONDS:g} s, nothing to be done | {ours:.2f} s | {baseline:.2f} s | "
        f"{ours / baseline:.2f}x | {median['start-up floor (--version)']:.2f} s | "
        f"{'met' if ours <= TARGET_SECONDS else 'missed'} |"
    )


if __name__ == "__main__":
    main()
