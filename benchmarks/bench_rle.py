"""RLE encode/decode: tilepipe.io.rle against article 001's mask2rle/rle2mask, side by side.

Builds one glomerulus-like mask (filled ellipses 150-480 px across, ~9 %
foreground), runs both implementations on it in this process, checks that
they agree, and prints times (best of ``--repeats``), speed-ups and peak
memory, then the markdown rows for the "## RLE" section of
docs/benchmarks.md.

    python benchmarks/bench_rle.py [--size 16384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from baselines.article001 import mask2rle, rle2mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.measure
from tests.measure import peak_bytes
from tilepipe.io import rle


def glomerulus_mask(size: int, foreground: float, seed: int) -> tuple[np.ndarray, int]:
    """Return a ``(size, size)`` uint8 0/1 mask of filled ellipses and their count.

    Ellipses 150-480 px across (both axes), random centres and angles, added
    ten at a time until at least ``foreground`` of the pixels are set.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.uint8)
    count = 0
    while np.count_nonzero(mask) < foreground * mask.size:
        for _ in range(10):
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            half_axes = tuple(int(v) for v in rng.uniform(75, 240, 2))
            cv2.ellipse(mask, centre, half_axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
            count += 1
    return mask, count


def fastest(*calls: tuple, repeats: int) -> list[tuple[float, object]]:
    """Run ``calls`` (each ``(fn, *args)``) round-robin ``repeats`` times, so load hits all alike.

    Returns, per call, its fastest wall time in seconds and its last result.
    """
    best = [float("inf")] * len(calls)
    results = [None] * len(calls)
    for _ in range(repeats):
        for k, (fn, *args) in enumerate(calls):
            results[k] = None  # free the previous result before the next call
            start = time.perf_counter()
            results[k] = fn(*args)
            best[k] = min(best[k], time.perf_counter() - start)
    return list(zip(best, results, strict=False))


def run_numbers(mask: np.ndarray) -> np.ndarray:
    """Return the interleaved 1-based ``start length`` numbers of ``mask``'s runs (int64)."""
    starts, lengths = rle.runs_of(mask)
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = lengths
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="mask side in pixels (default 16384)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mask, ellipses = glomerulus_mask(args.size, 0.09, args.seed)
    h, w = mask.shape
    mib = mask.nbytes / 2**20
    print(
        f"mask: {h} x {w} uint8 ({mib:.0f} MiB), {ellipses} ellipses 150-480 px across, "
        f"{np.count_nonzero(mask) / mask.size:.1%} foreground, seed {args.seed}"
    )
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, load average {os.getloadavg()[0]:.1f} at start"
    )

    (ours_encode_s, ours_text), (base_encode_s, base_text) = fastest(
        (rle.encode, mask), (mask2rle, mask), repeats=args.repeats
    )
    if ours_text != base_text:
        raise SystemExit("encode: tilepipe and article 001 disagree")
    runs = len(ours_text.split()) // 2
    print(f"encode: {runs} runs, {len(ours_text) / 2**20:.1f} MiB of text, outputs identical")

    (ours_decode_s, ours_mask), (base_decode_s, base_mask) = fastest(
        (rle.decode, ours_text, (h, w)), (rle2mask, base_text, (w, h)), repeats=args.repeats
    )
    if not (np.array_equal(ours_mask, mask) and np.array_equal(base_mask, mask)):
        raise SystemExit("decode: an implementation does not reproduce the mask")
    print(
        f"decode: outputs identical; tilepipe C-contiguous: {ours_mask.flags.c_contiguous}, "
        f"article 001 C-contiguous: {base_mask.flags.c_contiguous}"
    )
    del base_mask, ours_mask

    # Where encode's time goes (private helpers, timed on their own).
    ((runs_s, pairs),) = fastest((run_numbers, mask), repeats=args.repeats)
    (text_s, _), (join_s, _) = fastest(
        (rle.join_decimal, pairs), (lambda p: " ".join(map(str, p.tolist())), pairs), repeats=args.repeats
    )
    print(
        f"encode breakdown: runs {runs_s * 1e3:.1f} ms, text {text_s * 1e3:.1f} ms "
        f"(str.join of the same numbers: {join_s * 1e3:.1f} ms)"
    )

    peaks = {
        "encode": (peak_bytes(rle.encode, mask), peak_bytes(mask2rle, mask)),
        "decode": (peak_bytes(rle.decode, ours_text, (h, w)), peak_bytes(rle2mask, base_text, (w, h))),
    }
    times = {"encode": (ours_encode_s, base_encode_s), "decode": (ours_decode_s, base_decode_s)}
    targets = {"encode": ">= 15x", "decode": ">= 1x (no slower)"}

    def memory(n: int) -> str:
        return f"{n / 2**20:,.0f} MiB ({n / mask.nbytes:.2f}x mask)"

    def seconds(s: float) -> str:
        return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"

    print()
    print(
        "| operation | tilepipe | article 001 | speed-up (article / tilepipe) | target | peak memory tilepipe | peak memory article 001 |"
    )
    print("|---|---|---|---|---|---|---|")
    for op in ("encode", "decode"):
        ours_s, base_s = times[op]
        ours_peak, base_peak = peaks[op]
        print(
            f"| {op} | {seconds(ours_s)} | {seconds(base_s)} | {base_s / ours_s:.1f}x | {targets[op]} "
            f"| {memory(ours_peak)} | {memory(base_peak)} |"
        )


if __name__ == "__main__":
    main()
