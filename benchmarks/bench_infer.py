"""Whole-slide inference: tilepipe.inference.predict.predict_slide against MONAI sliding_window_inference, side by side.

One generated slide (``--size`` square, stained tissue on its left half,
near-white glass on the right, ``--glomeruli`` glomeruli 150-400 px across)
and one network (the demo's resnet18 U-Net from
``tilepipe.model.build_model``), run on the CPU, one process per run:

- tilepipe: ``predict_slide`` with the recipe's geometry (1024 px windows,
  512 px kept centres), the pyramid level nearest ``--input-size`` (level 2
  for 256), no flips (MONAI has no flip TTA), classification gate 0.5,
  background centres skipped; and the same without the gate;
- MONAI: ``sliding_window_inference`` over the whole level-0 slide as one
  float32 tensor, roi 1024, overlap 0.5 (constant blending), with a
  predictor that scales each roi as training does (area resize of the 1024
  roi to ``--input-size``, ImageNet mean/std), runs the same encoder and
  decoder, and resizes the probability back bilinearly.

Both take ``--batch-size`` windows per batch. Each run is a child process
that reports its wall and CPU time and its peak RSS (``VmHWM``), also above
its RSS after imports and model load; runs go round-robin ``--repeats``
times and the fastest wall time of each kind counts. Agreement is the share
of tissue pixels on which the two binary masks at 0.5 agree.

A network with random weights predicts something different for every
window that sees a pixel (its output at a pixel depends on the whole
window: CBAM's channel attention pools the window, and so does the
classification head), so two stitchings of it disagree for reasons that
have nothing to do with stitching, and its classification head gates
nothing or everything. The network is therefore first trained briefly on a
separate, equally sparse generated slide (see :func:`trained_checkpoint`);
the checkpoint and the slides are cached under ``benchmarks/data/infer/``
(git-ignored). Training takes 10-20 minutes on 2 cores, once.

    python benchmarks/bench_infer.py [--size 6000] [--glomeruli 10] [--repeats 2]
    python benchmarks/bench_infer.py --size 12000 --glomeruli 40   # memory grows with the slide for MONAI only
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.builders
from tests.builders import write_slide_store
from tilepipe.data.tile_dataset import TileDataset
from tilepipe.model import build_model, load_checkpoint, save_checkpoint
from tilepipe.model.losses import SegmentationLoss

DATA = Path(__file__).resolve().parent / "data" / "infer"
MODEL = {"encoder": "resnet18", "center_channels": 128, "decoder_channels": 32}  # the demo's network
TILE, KEEP, OVERLAP = 1024, 512, 0.5
KINDS = ("tilepipe", "tilepipe-nogate", "monai")
GLASS = (236, 234, 240)
PINK = (215, 140, 185)
TUBULE_WALL, TUBULE_LUMEN = (190, 100, 160), (242, 222, 236)
NUCLEUS = (90, 40, 120)
TUFT, CAPSULE, BOWMAN = (150, 70, 160), (200, 80, 170), (246, 240, 246)


# ------------------------------------------------------------------ data


def generate_slide(height: int, width: int, tissue_width: int, glomeruli: int, seed: int):
    """Return ``(image (3, y, x) uint8, mask (y, x) uint8 0/1, tissue (y, x) bool, discs [(y, x, radius)])``.

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
    noise = cv2.resize(
        rng.normal(0, 1, (height // 64 + 2, tissue_width // 64 + 2)).astype(np.float32),
        (tissue_width, height),
        interpolation=cv2.INTER_CUBIC,
    )
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
    discs: list[tuple[int, int, int]] = []
    while len(discs) < glomeruli:
        radius = int(rng.integers(75, 200))
        y, x = int(rng.integers(radius, height - radius)), int(rng.integers(radius, tissue_width - radius))
        if any((y - cy) ** 2 + (x - cx) ** 2 < (radius + r + 40) ** 2 for cy, cx, r in discs):
            continue
        discs.append((y, x, radius))
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
    return np.ascontiguousarray(image.transpose(2, 0, 1)), mask, tissue, discs


def slide_store(name: str, height: int, width: int, tissue_width: int, glomeruli: int, seed: int):
    """Write (once) and return ``(store path, tissue mask, true mask, glomerulus discs)`` of a generated slide."""
    path = DATA / f"{name}_{height}x{width}_{tissue_width}_{glomeruli}_{seed}.zarr"
    image, mask, tissue, discs = generate_slide(height, width, tissue_width, glomeruli, seed)
    if not path.exists():
        write_slide_store(path, image, mask, chunk=512, min_level_size=1024)
    return path, tissue, mask, discs


# ------------------------------------------------------------------ the network


def touches(disc: tuple[int, int, int], tile_y: int, tile_x: int) -> bool:
    """Whether the disc ``(y, x, radius)`` reaches into the 1024 px tile whose origin is ``(tile_y, tile_x)``."""
    cy, cx, radius = disc
    dy, dx = cy - np.clip(cy, tile_y, tile_y + TILE - 1), cx - np.clip(cx, tile_x, tile_x + TILE - 1)
    return dy * dy + dx * dx <= (radius + 1) ** 2


def balanced_tiles(discs: list[tuple[int, int, int]], side: int, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return ``n`` tile rows of the ``side``-square training slide, balanced as the recipe samples.

    Alternately a tile that some glomerulus reaches into (wholly or in
    part) and a tile that none does (tissue, glass, the slide's border).
    """
    origins = []
    while len(origins) < n:
        if len(origins) % 2 == 0:
            y, x, r = discs[rng.integers(len(discs))]
            y, x = y + rng.integers(-r - TILE + 1, r), x + rng.integers(-r - TILE + 1, r)
            wanted = True
        else:
            y, x = rng.integers(-TILE // 2, side - TILE // 2, 2)
            wanted = False
        if any(touches(disc, y, x) for disc in discs) == wanted:
            origins.append((y, x))
    origins = np.array(origins)
    return pd.DataFrame({"slide": "train", "y": origins[:, 0], "x": origins[:, 1], "size": TILE})


def trained_checkpoint(input_size: int, steps: int, seed: int) -> Path:
    """Train (once) the demo network briefly to segment the generated glomeruli; return its checkpoint.

    ``steps`` Adam steps of 4 tiles on the recipe's loss, learning rate
    cosine from 1e-3 to 1e-5, random flips; then the classification head is
    refit on the frozen encoder's features of 256 more tiles (so few steps
    do not train it reliably: once it said "glomerulus" for every window).
    """
    path = DATA / f"model_{input_size}_{steps}_{seed}.pt"
    if path.exists():
        return path
    # As sparse as the benchmark slide, so that most tiles without glomeruli are tissue.
    side = 4096
    store, _, _, discs = slide_store("train", side, side, 3072, 8, seed + 1)
    rng = np.random.default_rng(seed)
    batch_size = 4
    dataset = TileDataset(balanced_tiles(discs, side, steps * batch_size, rng), {"train": store}, input_size)
    torch.manual_seed(seed)
    model = build_model(MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=1e-5)
    loss_fn = SegmentationLoss()
    model.train()
    started = time.perf_counter()
    for step, batch in enumerate(torch.utils.data.DataLoader(dataset, batch_size=batch_size), 1):
        flip = [d for d, on in zip((-1, -2), rng.random(2) < 0.5, strict=False) if on]
        image, mask = batch["image"].flip(flip), batch["mask"].flip(flip)
        loss, _ = loss_fn(model(image), mask, batch["clf"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 10 == 0:
            print(f"  train step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
    refit_classifier(model, TileDataset(balanced_tiles(discs, side, 256, rng), {"train": store}, input_size))
    save_checkpoint(path, model, MODEL, extra={"input_size": input_size, "steps": steps})
    return path


def refit_classifier(model, dataset: TileDataset, epochs: int = 300) -> None:
    """Fit ``model``'s classification head to ``dataset`` on its frozen encoder's deepest features."""
    model.eval()
    with torch.inference_mode():
        batches = list(torch.utils.data.DataLoader(dataset, batch_size=8))
        features = torch.cat([model.encode(batch["image"])[-1] for batch in batches])
    features = features.clone()  # a normal tensor: autograd may save it
    labels = torch.cat([batch["clf"] for batch in batches])
    head = model.classification_head
    head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features).view(-1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        accuracy = float(((head(features).view(-1) > 0).float() == labels).float().mean())
    print(f"  classification head refit: loss {loss.item():.3f}, accuracy {accuracy:.1%} on {len(labels)} tiles")


# ------------------------------------------------------------------ the two runs (child processes)


def peak_rss() -> int:
    """This process's peak resident set size (``VmHWM``), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_tilepipe(store: Path, checkpoint: Path, out: Path, input_size: int, batch_size: int, gate: bool) -> dict:
    from tilepipe.inference.predict import predict_slide

    model = load_checkpoint(checkpoint)
    base = peak_rss()
    started, cpu_started = time.perf_counter(), time.process_time()
    stats = predict_slide(
        store,
        out,
        [model],
        tile_size=TILE,
        keep=KEEP,
        input_size=input_size,
        read_level="auto",
        tta=["none"],
        clf_threshold=0.5 if gate else None,
        min_tissue=0.0,
        saturation_threshold=30,
        batch_size=batch_size,
        device="cpu",
        amp=False,
        progress=False,
    )
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "base_rss": base,
        "peak_rss": peak_rss(),
        "stats": stats,
    }


def run_monai(store: Path, checkpoint: Path, out: Path, input_size: int, batch_size: int) -> dict:
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference

    from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from tilepipe.stores.slide import SlideStore

    model = load_checkpoint(checkpoint)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255

    def predictor(roi: torch.Tensor) -> torch.Tensor:
        """(b, 3, 1024, 1024) float 0..255 -> (b, 1, 1024, 1024) probability, scaled as in training."""
        x = (F.interpolate(roi, size=(input_size, input_size), mode="area") - mean) / std
        probability = torch.sigmoid(model.segment(model.encode(x)))
        return F.interpolate(probability, size=roi.shape[-2:], mode="bilinear", align_corners=False)

    base = peak_rss()
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        slide = torch.from_numpy(SlideStore(store).levels[0][...])[None].float()
        probability = sliding_window_inference(slide, TILE, batch_size, predictor, overlap=OVERLAP, mode="constant")
        quantised = (probability[0, 0] * 255).round().to(torch.uint8).numpy()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    np.save(out, quantised)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "base_rss": base, "peak_rss": peak_rss()}


def measure(kind: str, store: Path, checkpoint: Path, out: Path, args) -> dict:
    """Run ``kind`` in a child process of its own; return what it reports."""
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--store",
        str(store),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--input-size",
        str(args.input_size),
        "--batch-size",
        str(args.batch_size),
    ]
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
    parser.add_argument("--batch-size", type=int, default=4, help="windows per batch, both sides (default 4)")
    parser.add_argument("--train-steps", type=int, default=80, help="training steps of 4 tiles (default 80)")
    parser.add_argument("--glomeruli", type=int, default=10, help="glomeruli on the slide (default 10)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, round-robin; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-nogate",
        action="store_true",
        help="skip the run without the classification gate (saves its time on large slides)",
    )
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        common = (args.store, args.checkpoint, args.out, args.input_size, args.batch_size)
        result = run_monai(*common) if args.child == "monai" else run_tilepipe(*common, gate=args.child == "tilepipe")
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
    print(
        f"slide: {args.size} x {args.size} ({megapixels:.0f} Mpx), tissue on the left half, "
        f"{args.glomeruli} glomeruli ({truth.mean():.2%} of pixels); network {MODEL}, input {args.input_size}, "
        f"batch {args.batch_size}"
    )

    kinds = [kind for kind in KINDS if not (args.no_nogate and kind == "tilepipe-nogate")]
    outputs = {
        kind: DATA / (f"{kind}_{args.size}.npy" if kind == "monai" else f"{kind}_{args.size}.zarr") for kind in kinds
    }
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for kind in kinds:
            run = measure(kind, store, checkpoint, outputs[kind], args)
            print(
                f"{kind} (run {repeat + 1}): {run['seconds']:.1f} s wall, {run['cpu_seconds']:.1f} s CPU, peak RSS "
                f"{mib(run['peak_rss'])} ({mib(run['peak_rss'] - run['base_rss'])} above imports + model), "
                f"load average {os.getloadavg()[0]:.1f} {run.get('stats', '')}"
            )
            if kind not in best or run["seconds"] < best[kind]["seconds"]:
                best[kind] = run

    from tilepipe.stores.probability import read_probability

    monai_mask = np.load(outputs["monai"]) >= 128
    agreement = {}
    for kind in [kind for kind in kinds if kind != "monai"]:
        ours = read_probability(outputs[kind])[...] >= 128
        agreement[kind] = float((ours == monai_mask)[tissue].mean())
        print(
            f"{kind} vs MONAI: agreement on tissue pixels {agreement[kind]:.4%}, Dice of the two masks "
            f"{dice(ours, monai_mask):.4f}; Dice vs truth {dice(ours, truth != 0):.4f} "
            f"(MONAI {dice(monai_mask, truth != 0):.4f})"
        )

    theirs = best["monai"]
    print()
    print("| measure | target | tilepipe | MONAI | ratio | verdict |")
    print("|---|---|---|---|---|---|")
    for kind, label in (("tilepipe", ""), ("tilepipe-nogate", " without the classification gate")):
        if kind not in best:
            continue
        ours = best[kind]
        for what, key in (("throughput", "seconds"), ("throughput per CPU second", "cpu_seconds")):
            speed = theirs[key] / ours[key]
            print(
                f"| {what}{label} | >= 2x | {megapixels / ours[key]:.2f} Mpx/s | {megapixels / theirs[key]:.2f} Mpx/s "
                f"| {speed:.2f}x | {verdict(speed >= 2)} |"
            )
    ours = best["tilepipe"]
    for what, ours_bytes, their_bytes in (
        ("peak RSS", ours["peak_rss"], theirs["peak_rss"]),
        (
            "peak RSS above imports + model",
            ours["peak_rss"] - ours["base_rss"],
            theirs["peak_rss"] - theirs["base_rss"],
        ),
    ):
        ratio = ours_bytes / their_bytes
        print(
            f"| {what} | <= 0.25x | {mib(ours_bytes)} | {mib(their_bytes)} | {ratio:.2f}x | {verdict(ratio <= 0.25)} |"
        )
    share = agreement["tilepipe"]
    print(f"| binary agreement at 0.5, tissue pixels | >= 0.99 | | | {share:.4f} | {verdict(share >= 0.99)} |")


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def verdict(met: bool) -> str:
    return "met" if met else "missed"


if __name__ == "__main__":
    main()
