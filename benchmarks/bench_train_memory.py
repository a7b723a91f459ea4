"""Host memory of one recipe training step on the CPU, per batch size.

The recipe network (se_resnext101_32x4d U-Net with CBAM, hypercolumns,
deep supervision and the classification head; random weights; or the same
decoder on ``--encoder``, or ``--architecture`` an smp one with its default
decoder and smp's classification head) takes one
Adam step in fp32 on ``--input-size`` px inputs (the recipe's 320) with the
recipe loss, in a fresh process per batch size; the process reports its
peak RSS (``VmHWM``). The baseline is the same process after building the
network and its optimizer, before any step: the difference is what a batch
costs. Prints a markdown table for docs/benchmarks.md and the linear fit
(MB = base + per_sample * batch) that rules/train.smk uses for mem_mb.

    python benchmarks/bench_train_memory.py --batches 2 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from pathlib import Path
import torch
batch, size, encoder, architecture = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
from tilepipe.model import FIRST_PLACE_SETTINGS, build_model
from tilepipe.model.losses import SegmentationLoss
def peak():
    status = Path("/proc/self/status").read_text()
    return 1024 * next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
if architecture == "unet_1st_place":
    settings = {**FIRST_PLACE_SETTINGS, "encoder": encoder}
else:
    settings = {"architecture": architecture, "encoder": encoder, "clf_head": True}
model = build_model(settings).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
loss_fn = SegmentationLoss({"bce": 1.0, "lovasz": 1.0, "deep": 0.1, "clf": 1.0})
built = peak()
image = torch.randn(batch, 3, size, size)
mask = (torch.rand(batch, 1, size, size) > 0.9).float()
started = time.perf_counter()
loss, _ = loss_fn(model(image), mask, mask.flatten(1).amax(1))
loss.backward()
optimizer.step()
print(json.dumps({"built": built, "peak": peak(), "seconds": time.perf_counter() - started}))
"""


def measure(batch: int, size: int, encoder: str, architecture: str = "unet_1st_place") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch), str(size), encoder, architecture],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"batch {batch} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])  # 1 cannot train: BatchNorm
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--encoder", default="se_resnext101_32x4d", help="the recipe network on another encoder")
    parser.add_argument(
        "--architecture", default="unet_1st_place", help="model.architecture (an smp one: its defaults)"
    )
    args = parser.parse_args()
    rows = []
    for batch in args.batches:
        result = measure(batch, args.input_size, args.encoder, args.architecture)
        rows.append((batch, result))
        print(f"batch {batch}: peak {result['peak'] / 2**20:,.0f} MiB, step {result['seconds']:.1f} s", flush=True)
    batches = np.array([b for b, _ in rows], dtype=float)
    peaks = np.array([r["peak"] / 2**20 for _, r in rows])
    per_sample, base = np.polyfit(batches, peaks, 1)
    load = os.getloadavg()[0]
    print(
        f"\n| batch | peak RSS MiB | after build MiB | step s | load avg |  "
        f"(input {args.input_size} px, {args.architecture}, {args.encoder}, fp32, CPU)"
    )
    print("|---:|---:|---:|---:|---:|")
    for batch, r in rows:
        print(f"| {batch} | {r['peak'] / 2**20:,.0f} | {r['built'] / 2**20:,.0f} | {r['seconds']:.1f} | {load:.2f} |")
    print(f"\nfit: peak MiB = {base:,.0f} + {per_sample:,.0f} x batch ({time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
