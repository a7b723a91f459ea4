"""Whole-slide inference: tilepipe.infer.predict_slide against MONAI sliding_window_inference, side by side.

One generated slide (``--size`` square, stained tissue on its left half,
near-white glass on the right, a few glomeruli 150-400 px across) and one
network (the demo's resnet18 U-Net from ``tilepipe.model.build_model``),
run on the CPU in a single process each:

- tilepipe: ``predict_slide``, the recipe's geometry (1024 px windows,
  512 px kept centres), reading pyramid level 1 and resizing to
  ``--input-size``, no flips (MONAI has no flip TTA), classification gate
  0.5, background centres skipped; and the same without the gate;
- MONAI: ``sliding_window_inference`` over the whole level-0 slide as one
  float32 tensor, roi 1024, overlap 0.5 (constant blending), with a
  predictor that scales each roi exactly as training does (area resize of
  the 1024 roi to ``--input-size``, ImageNet mean/std), runs the same
  encoder and decoder, and resizes the probability back bilinearly.

Each run is a child process that reports its wall time and its peak RSS
(``VmHWM``), also above its RSS after imports and model load. Agreement is
the share of tissue pixels on which the two binary masks at 0.5 agree.

A network with random weights predicts something different for every
window that sees a pixel (its output at a pixel depends on the whole
window: CBAM's channel attention pools the window, and so does the
classification head), so two stitchings of it disagree for reasons that
have nothing to do with stitching. The network is therefore first trained
briefly (``--train-steps`` Adam steps on the recipe's loss, 1024 px tiles
of a separate generated slide through ``tilepipe.loader.TileDataset``) to
segment the glomeruli; the trained checkpoint and the slides are cached
under ``benchmarks/data/infer/`` (git-ignored).

    python benchmarks/bench_infer.py [--size 6000] [--input-size 256] [--train-steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from tilepipe.loader import TileDataset
from tilepipe.losses import SegmentationLoss
from tilepipe.model import build_model, load_checkpoint, save_checkpoint
from tilepipe.ngff import write_slide_store

DATA = Path(__file__).resolve().parent / "data" / "infer"
MODEL = {"encoder": "resnet18", "center_channels": 128, "decoder_channels": 32}  # the demo's network
TILE, KEEP, OVERLAP = 1024, 512, 0.5
GLASS = (236, 234, 240)
PINK = (215, 140, 185)
TUBULE_WALL, TUBULE_LUMEN = (190, 100, 160), (242, 222, 236)
NUCLEUS = (90, 40, 120)
TUFT, CAPSULE, BOWMAN = (150, 70, 160), (200, 80, 170), (246, 240, 246)


# ------------------------------------------------------------------ data


def generate_slide(height: int, width: int, tissue_width: int, glomeruli: int, seed: int):
    """Return ``(image (3, y, x) uint8, mask (y, x) uint8 0/1, tissue (y, x) bool, centres [(y, x)])``.

    Tissue (pink interstitium, tubules, nuclei) fills columns ``0:tissue_width``;
    the rest is glass with a little noise. ``glomeruli`` non-overlapping
    glomeruli (purple tuft, white Bowman's space, magenta capsule; the mask
    is the capsule's disc), 150-400 px across, lie inside the tissue.
    """
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GLASS
    tissue = np.zeros((height, width), dtype=bool)
    tissue[:, :tissue_width] = True
    noise = cv2.resize(rng.normal(0, 1, (height // 64 + 2, tissue_width // 64 + 2)).astype(np.float32),
                       (tissue_width, height), interpolation=cv2.INTER_CUBIC)
    pink = np.asarray(PINK, dtype=np.float32) + 18 * noise[..., None] * np.float32([0.6, 1.0, 0.7])
    image[:, :tissue_width] = np.clip(pink, 0, 255).astype(np.uint8)
    view = image[:, :tissue_width]
    for _ in range(height * tissue_width // 9000):
        centre = (int(rng.integers(0, tissue_width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(18, 40)), int(rng.integers(14, 30)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(view, centre, axes, angle, 0, 360, TUBULE_WALL, -1)
        cv2.ellipse(view, centre, (axes[0] - 7, axes[1] - 7), angle, 0, 360, TUBULE_LUMEN, -1)
    for _ in range(height * tissue_width // 1500):
        cv2.circle(view, (int(rng.integers(0, tissue_width)), int(rng.integers(0, height))), 3, NUCLEUS, -1)
    mask = np.zeros((height, width), dtype=np.uint8)
    centres: list[tuple[int, int, int]] = []
    while len(centres) < glomeruli:
        radius = int(rng.integers(75, 200))
        y, x = int(rng.integers(radius, height - radius)), int(rng.integers(radius, tissue_width - radius))
        if any((y - cy) ** 2 + (x - cx) ** 2 < (radius + r + 40) ** 2 for cy, cx, r in centres):
            continue
        centres.append((y, x, radius))
        cv2.circle(view, (x, y), radius, CAPSULE, -1)
        cv2.circle(view, (x, y), radius - 5, BOWMAN, -1)
        cv2.circle(view, (x, y), int(radius * 0.85), TUFT, -1)
        for _ in range(radius * radius // 60):
            r, a = radius * 0.8 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            dot = (int(x + r * np.cos(a)), int(y + r * np.sin(a)))
            cv2.circle(view, dot, 3, NUCLEUS if rng.random() < 0.7 else BOWMAN, -1)
        cv2.circle(mask, (x, y), radius, 1, -1)
    grain = rng.integers(-3, 4, (height, width, 1), dtype=np.int16)
    image = np.clip(image + grain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image.transpose(2, 0, 1)), mask, tissue, [(y, x) for y, x, _ in centres]


def slide_store(name: str, height: int, width: int, tissue_width: int, glomeruli: int, seed: int):
    """Write (once) and return ``(store path, tissue mask, true mask, glomerulus centres)`` of a generated slide."""
    path = DATA / f"{name}_{height}x{width}_{tissue_width}_{glomeruli}_{seed}.zarr"
    image, mask, tissue, centres = generate_slide(height, width, tissue_width, glomeruli, seed)
    if not path.exists():
        write_slide_store(path, image, mask, chunk=512, min_level_size=1024)
    return path, tissue, mask, centres


# ------------------------------------------------------------------ the network


def trained_checkpoint(input_size: int, steps: int, seed: int) -> Path:
    """Train (once) the demo network briefly to segment the generated glomeruli; return its checkpoint."""
    path = DATA / f"model_{input_size}_{steps}_{seed}.pt"
    if path.exists():
        return path
    store, _, _, centres = slide_store("train", 3072, 3072, 2048, 14, seed + 1)
    rng = np.random.default_rng(seed)
    batch_size = 8
    n = steps * batch_size
    # Half the tiles hold a glomerulus somewhere, half are anywhere (tissue, glass, borders).
    picked = rng.integers(0, len(centres), n)
    near = np.array([centres[i] for i in picked]) - rng.integers(100, TILE - 100, (n, 2))
    anywhere = rng.integers(-TILE // 2, 3072 - TILE // 2, (n, 2))
    origins = np.where((np.arange(n) % 2 == 0)[:, None], near, anywhere)
    tiles = pd.DataFrame({"slide": "train", "y": origins[:, 0], "x": origins[:, 1], "size": TILE})
    dataset = TileDataset(tiles, {"train": store}, input_size=input_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    torch.manual_seed(seed)
    model = build_model(MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss()
    model.train()
    started = time.perf_counter()
    for step, batch in enumerate(loader, 1):
        flip = [d for d, on in zip((-1, -2), rng.random(2) < 0.5) if on]
        image, mask = batch["image"].flip(flip), batch["mask"].flip(flip)
        loss, _ = loss_fn(model(image), mask, batch["clf"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            print(f"  train step {step}/{steps}: loss {float(loss):.3f} ({time.perf_counter() - started:.0f} s)")
    save_checkpoint(path, model, MODEL, extra={"input_size": input_size, "steps": steps})
    return path


# ------------------------------------------------------------------ the two runs (child processes)


def peak_rss() -> int:
    """This process's peak resident set size (``VmHWM``), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_tilepipe(store: Path, checkpoint: Path, out: Path, input_size: int, batch_size: int, gate: bool) -> dict:
    from tilepipe.infer import predict_slide

    model = load_checkpoint(checkpoint)
    base = peak_rss()
    started = time.perf_counter()
    stats = predict_slide(
        store, out, [model], tile_size=TILE, keep=KEEP, input_size=input_size, tta=["none"],
        clf_threshold=0.5 if gate else None, batch_size=batch_size, device="cpu", progress=False,
    )
    return {"seconds": time.perf_counter() - started, "base_rss": base, "peak_rss": peak_rss(), "stats": stats}


def run_monai(store: Path, checkpoint: Path, out: Path, input_size: int, batch_size: int) -> dict:
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference

    from tilepipe.loader import IMAGENET_MEAN, IMAGENET_STD
    from tilepipe.store import SlideStore

    model = load_checkpoint(checkpoint)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255

    def predictor(roi: torch.Tensor) -> torch.Tensor:
        """(b, 3, 1024, 1024) float 0..255 -> (b, 1, 1024, 1024) probability, scaled as in training."""
        x = (F.interpolate(roi, size=(input_size, input_size), mode="area") - mean) / std
        probability = torch.sigmoid(model.segment(model.encode(x)))
        return F.interpolate(probability, size=roi.shape[-2:], mode="bilinear", align_corners=False)

    base = peak_rss()
    started = time.perf_counter()
    with torch.inference_mode():
        slide = torch.from_numpy(SlideStore(store).levels[0][...])[None].float()
        probability = sliding_window_inference(slide, TILE, batch_size, predictor, overlap=OVERLAP, mode="constant")
        quantised = (probability[0, 0] * 255).round().to(torch.uint8).numpy()
    seconds = time.perf_counter() - started
    np.save(out, quantised)
    return {"seconds": seconds, "base_rss": base, "peak_rss": peak_rss()}


def measure(kind: str, store: Path, checkpoint: Path, out: Path, args) -> dict:
    """Run ``kind`` in a child process of its own; return what it reports."""
    command = [sys.executable, __file__, "--child", kind, "--store", str(store), "--checkpoint", str(checkpoint),
               "--out", str(out), "--input-size", str(args.input_size), "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


# ------------------------------------------------------------------ report


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6000, help="slide side in pixels (default 6000)")
    parser.add_argument("--input-size", type=int, default=256, help="network input side (default 256)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--glomeruli", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["tilepipe", "tilepipe-nogate", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        common = (args.store, args.checkpoint, args.out, args.input_size, args.batch_size)
        if args.child == "monai":
            result = run_monai(*common)
        else:
            result = run_tilepipe(*common, gate=args.child == "tilepipe")
        print(json.dumps(result))
        return

    import monai

    DATA.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), MONAI {monai.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    checkpoint = trained_checkpoint(args.input_size, args.train_steps, args.seed)
    store, tissue, truth, _ = slide_store("bench", args.size, args.size, args.size // 2, args.glomeruli, args.seed)
    megapixels = args.size * args.size / 1e6
    print(f"slide: {args.size} x {args.size} ({megapixels:.0f} Mpx), tissue on the left half, "
          f"{args.glomeruli} glomeruli ({truth.mean():.2%} of pixels); network {MODEL}, input {args.input_size}, "
          f"batch {args.batch_size}")

    runs = {}
    for kind in ("tilepipe", "tilepipe-nogate", "monai"):
        out = DATA / (f"{kind}.zarr" if kind != "monai" else "monai.npy")
        runs[kind] = measure(kind, store, checkpoint, out, args)
        r = runs[kind]
        print(f"{kind}: {r['seconds']:.1f} s, {megapixels / r['seconds']:.2f} Mpx/s, peak RSS "
              f"{r['peak_rss'] / 2**20:,.0f} MiB ({(r['peak_rss'] - r['base_rss']) / 2**20:,.0f} MiB above "
              f"imports + model) {r.get('stats', '')}")

    from tilepipe.infer import read_probability

    monai_mask = np.load(DATA / "monai.npy") >= 128
    agreement = {}
    for kind in ("tilepipe", "tilepipe-nogate"):
        ours = read_probability(DATA / f"{kind}.zarr")[...] >= 128
        agreement[kind] = (float((ours == monai_mask)[tissue].mean()), dice(ours, monai_mask), dice(ours, truth != 0))
        print(f"{kind} vs MONAI: agreement on tissue pixels {agreement[kind][0]:.4%}, Dice of the two masks "
              f"{agreement[kind][1]:.4f}; Dice vs truth {agreement[kind][2]:.4f} (MONAI {dice(monai_mask, truth != 0):.4f})")

    monai_run = runs["monai"]
    print()
    print("| measure | target | tilepipe | MONAI | ratio | verdict |")
    print("|---|---|---|---|---|---|")
    for kind in ("tilepipe", "tilepipe-nogate"):
        r = runs[kind]
        label = "" if kind == "tilepipe" else " (no classification gate)"
        speed = monai_run["seconds"] / r["seconds"]
        print(f"| throughput{label} | >= 2x | {megapixels / r['seconds']:.2f} Mpx/s | "
              f"{megapixels / monai_run['seconds']:.2f} Mpx/s | {speed:.2f}x | {'met' if speed >= 2 else 'missed'} |")
    r = runs["tilepipe"]
    for what, ours, theirs in (
        ("peak RSS", r["peak_rss"], monai_run["peak_rss"]),
        ("peak RSS above imports + model", r["peak_rss"] - r["base_rss"], monai_run["peak_rss"] - monai_run["base_rss"]),
    ):
        ratio = ours / theirs
        print(f"| {what} | <= 0.25x | {ours / 2**20:,.0f} MiB | {theirs / 2**20:,.0f} MiB | {ratio:.2f}x | "
              f"{'met' if ratio <= 0.25 else 'missed'} |")
    share = agreement["tilepipe"][0]
    print(f"| binary agreement at 0.5, tissue pixels | >= 0.99 | | | {share:.4f} | {'met' if share >= 0.99 else 'missed'} |")


if __name__ == "__main__":
    main()
