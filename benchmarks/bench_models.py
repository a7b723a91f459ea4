"""Encoder table: the embedded demo trained at an equal time budget by each encoder/architecture pair.

The demo's data (``config.yaml``: ``tilepipe.demo`` slides, seed 42) is
written once under ``--workdir`` with the package's own steps, as the
workflow runs them: ``write_demo_slide`` / ``write_demo_tables`` (train and
test slides, the test slides' truth), ``ingest_slide``, ``build_tile_index``
and ``make_folds`` (4 patient-grouped folds). Then every pair runs in its own
child process (this script with ``--child``; fresh memory, so its peak RSS is
its own) with ``--threads`` torch/OpenMP threads (default 1), and:

1. trains stage 1 of every fold with ``train_fold`` and the demo's settings
   (``config.yaml``: 64 px inputs, batch 8, 12 epochs, lr 1e-3 cosine to
   1e-4, light augmentations; random weights: ImageNet cannot be
   downloaded here), the model section set to the pair, with
   ``max_seconds = --budget / folds``: training stops at the first batch
   after that wall-clock budget (one thread on an idle machine: CPU time),
   validates that epoch and keeps the best-Dice checkpoint. The schedule
   still counts 12 epochs, so a pair that does not finish them stops at a
   higher learning rate; that is the price of an equal budget;
2. predicts as the workflow does (``predict_with_checkpoints`` with the
   config's ``prediction_settings``: 2 flips, classification gate 0.5):
   every train slide by the fold model that held it out, and the test
   slides by the 4-fold ensemble;
3. scores: the stage-1 out-of-fold Dice (``slide_dice`` of each train
   slide's prediction against its labels at 0.5, mean over slides) and the
   demo Dice (``write_submission`` at 0.5, ``submission_dice`` against the
   demo's held-back truth, mean over the test slides).

Reported per pair: parameters (millions), training samples per second (all
folds' training samples over their training wall time, validation
excluded), peak RSS in MiB (``VmHWM`` after training, and of it the part
above the process's RSS before the first network), prediction seconds,
epochs per fold (the last may be partial), the two Dice scores, and each
as a ratio to the first pair (the baseline: the demo's own network).

    python benchmarks/bench_models.py                          # 6 pairs x 150 s: ~25 minutes on 2 idle cores
    python benchmarks/bench_models.py --write                  # and replace "## Encoder table" in docs/benchmarks.md
    python benchmarks/bench_models.py --budget 5 --pairs unet_1st_place+resnet18 FPN+resnet18   # plumbing check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tilepipe
from bench_scale import Timed, child_result, mib, peak_rss

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Encoder table"
# architecture+encoder; the first is the baseline (the demo's network).
PAIRS = [
    "unet_1st_place+resnet18",
    "unet_1st_place+timm/regnety_002",
    "Unet+timm/efficientnet_b0",
    "UnetPlusPlus+resnet18",
    "FPN+resnet18",
    "DeepLabV3Plus+resnet18",
]


def demo_config() -> dict:
    """The repository's config.yaml, resolved (schema defaults filled in, checked)."""
    from tilepipe.config import resolve

    return resolve(yaml.safe_load((REPO / "config.yaml").read_text()))


def pair_model(config: dict, pair: str) -> dict:
    """The config's model section with the architecture and encoder of ``pair`` (``ARCHITECTURE+ENCODER``).

    Raises InputError (from ``check_model_settings``) for a pair the config cannot train.
    """
    from tilepipe.config import check_model_settings

    architecture, _, encoder = pair.partition("+")
    model = {**config["model"], "architecture": architecture, "encoder": encoder}
    check_model_settings(model, config["train"]["input_size"])
    return model


def files(workdir: Path) -> dict[str, Path]:
    """The shared data of a run under ``workdir``."""
    return {
        "data": workdir / "data",
        "truth": workdir / "truth",
        "truth_csv": workdir / "truth" / "test_truth.csv",
        "stores": workdir / "slides",
        "tiles": workdir / "tiles.parquet",
        "folds": workdir / "folds.csv",
    }


# ------------------------------------------------------------------ the demo's data (parent)


def prepare(workdir: Path, config: dict, threads: int) -> None:
    """Write the demo's train and test slides, their stores, the tile index and the folds (skipped when present)."""
    import pandas as pd

    from tilepipe.data.folds import make_folds, write_folds
    from tilepipe.data.ingest import ingest_slide
    from tilepipe.data.tile_index import build_tile_index
    from tilepipe.demo.plan import plan_demo
    from tilepipe.demo.write import write_demo_slide, write_demo_tables
    from tilepipe.io.kaggle import KaggleDataset

    f = files(workdir)
    if f["folds"].exists() and f["tiles"].exists():
        print(f"reusing the demo data in {workdir}", flush=True)
        return
    started = time.perf_counter()
    seed = config["seed"]
    slides = [s for s in plan_demo(config["demo"], seed) if s.split in ("train", "test")]
    for slide in slides:
        write_demo_slide(slide, f["data"], f["truth"], seed)
    write_demo_tables(slides, f["data"], f["truth"], f["truth_csv"])
    dataset = KaggleDataset(f["data"])
    ingest = config["ingest"]
    tiles = []
    for slide in slides:
        labels = {}
        if slide.split == "train":
            labels = {
                "rle": dataset.rle(slide.id),
                "label_source": f"train.csv (id {slide.id})",
                "polygons_path": dataset.polygons_path(slide.id),
                "polygon_coordinates": ingest["polygon_coordinates"],
            }
        store = f["stores"] / f"{slide.id}.zarr"
        ingest_slide(
            dataset.tiff_path(slide.id),
            store,
            **labels,
            expected_shape=dataset.expected_shape(slide.id),
            chunk=ingest["chunk"],
            min_level_size=ingest["min_level_size"],
            threads=threads,
            assumed_mpp=config["data"]["mpp"],
            progress=False,
        )
        if slide.split == "train":
            t = config["tiles"]
            tiles.append(
                build_tile_index(store, slide.id, t["size"], t["shift"], saturation_threshold=t["saturation_threshold"])
            )
    tiles = pd.concat(tiles, ignore_index=True)
    train = [s.id for s in slides if s.split == "train"]
    masked = tiles.groupby("slide")["is_masked"].sum()
    table = pd.DataFrame(
        {"slide": train, "patient": [dataset.patient(s) for s in train], "n_masked": [int(masked[s]) for s in train]}
    )
    folds = make_folds(table, config["folds"]["n"], config["folds"]["patients"], seed=seed, source=f["data"])
    write_folds(folds, f["folds"])
    tiles.to_parquet(f["tiles"])  # last: its presence means the data is complete
    print(
        f"demo data: {len(train)} train slides ({len(tiles)} tiles, {int(tiles['is_masked'].sum())} masked), "
        f"{len(slides) - len(train)} test slides, {folds['fold'].nunique()} folds; "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )


# ------------------------------------------------------------------ one pair (child)


def child(pair: str, args) -> dict:
    """Train, predict and score ``pair`` on the prepared data; return its measurements (JSON-able)."""
    import pandas as pd
    import torch

    from tilepipe.data.folds import read_folds
    from tilepipe.evaluation.dice import slide_dice, slide_histogram, submission_dice
    from tilepipe.evaluation.submission import write_submission
    from tilepipe.inference.members import models_for_slide
    from tilepipe.inference.predict import predict_with_checkpoints
    from tilepipe.inference.settings import prediction_settings
    from tilepipe.model import load_checkpoint
    from tilepipe.resources import bound_heap_growth
    from tilepipe.stores.slide import SlideStore
    from tilepipe.training import trainer as trainer_module

    torch.set_num_threads(args.threads)
    config = demo_config()
    f = files(args.workdir)
    out = args.workdir / "pairs" / re.sub(r"[^A-Za-z0-9_.-]", "_", pair)
    shutil.rmtree(out, ignore_errors=True)
    tiles, folds = pd.read_parquet(f["tiles"]), read_folds(f["folds"])
    stores = {p.stem: str(p) for p in sorted(f["stores"].glob("*.zarr"))}
    fold_ids = sorted(int(k) for k in folds.loc[folds["fold"] >= 0, "fold"].unique())
    settings = {
        "seed": config["seed"],
        "mpp": config["data"]["mpp"],
        "model": pair_model(config, pair),
        "loss": config["loss"],
        "train": {**config["train"], "device": "cpu", "epochs": args.epochs or config["train"]["epochs"]},
        "sampling": config["sampling"],
    }

    # Validation runs inside the budget; its time is taken out of the training rate.
    validation = {"seconds": 0.0}
    validate = trainer_module.FoldTrainer.validate

    def timed_validate(self, epoch):
        started = time.perf_counter()
        try:
            return validate(self, epoch)
        finally:
            validation["seconds"] += time.perf_counter() - started

    trainer_module.FoldTrainer.validate = timed_validate
    models, metrics = [], []
    start_rss = peak_rss()  # imports done, no network yet
    with Timed() as training:
        for fold in fold_ids:
            folder = out / "models" / f"fold{fold}"
            trainer_module.train_fold(
                tiles,
                folds,
                stores,
                fold,
                settings,
                folder / "model.pt",
                folder / "metrics.csv",
                out / "state" / f"fold{fold}" / "last.pt",
                max_seconds=args.budget / len(fold_ids),
            )
            models.append(str(folder / "model.pt"))
            metrics.append(pd.read_csv(folder / "metrics.csv"))
    train_peak = peak_rss()
    trainer_module.FoldTrainer.validate = validate

    bound_heap_growth()  # as workflow_scripts/predict.py
    predict = prediction_settings(config)
    runtime = {"batch_size": config["inference"]["batch_size"], "device": "cpu", "progress": False}
    fold_of = folds.set_index("slide")["fold"].to_dict()
    test_ids = [s for s in stores if s not in fold_of]
    predictions = {}
    with Timed() as predicting:
        for slide in [*fold_of, *test_ids]:
            predictions[slide] = out / "predictions" / f"{slide}.zarr"
            chosen = models_for_slide(models, fold_of, slide, f["folds"])
            predict_with_checkpoints(
                stores[slide], predictions[slide], chosen, predict, assumed_mpp=config["data"]["mpp"], **runtime
            )
    threshold = config["inference"]["threshold"]
    histograms = {s: slide_histogram(predictions[s], stores[s]) for s in fold_of}
    oof = slide_dice(histograms, folds, threshold)
    submission = out / "submission.csv"
    write_submission(f["data"] / "sample_submission.csv", {s: predictions[s] for s in test_ids}, threshold, submission)
    shapes = {s: SlideStore(stores[s]).shape for s in test_ids}
    demo = submission_dice(submission, f["truth_csv"], shapes)

    runs = pd.concat(metrics, ignore_index=True)
    train_seconds = float(runs["seconds"].sum()) - validation["seconds"]
    network = load_checkpoint(models[0])
    return {
        "pair": pair,
        "params": sum(p.numel() for p in network.parameters()),
        "samples": int(runs["samples"].sum()),
        "train_seconds": train_seconds,
        "validation_seconds": validation["seconds"],
        "fit_seconds": training.result["seconds"],
        "fit_cpu_seconds": training.result["cpu_seconds"],
        "samples_per_second": int(runs["samples"].sum()) / train_seconds,
        "epochs": [len(m) for m in metrics],
        "best_val_dice": [float(m["val_dice"].max()) for m in metrics],
        "start_rss": start_rss,
        "train_peak_rss": train_peak,
        "peak_rss": peak_rss(),
        "predict_seconds": predicting.result["seconds"],
        "oof_dice": float(oof["dice"].mean()),
        "demo_dice": float(demo["dice"].mean()),
    }


def measure(pair: str, args) -> dict:
    """Run ``pair`` in a fresh child process with ``--threads`` threads; return what it reports."""
    command = [sys.executable, __file__, "--child", pair, "--workdir", str(args.workdir)]
    command += ["--budget", str(args.budget), "--threads", str(args.threads), "--epochs", str(args.epochs or 0)]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
    result = child_result(pair, command, env)
    print(
        f"  {pair}: {result['params'] / 1e6:.2f} M params, {result['samples']} samples in "
        f"{result['train_seconds']:.0f} s ({result['samples_per_second']:.1f}/s; validation "
        f"{result['validation_seconds']:.0f} s; fit "
        f"{result['fit_seconds']:.0f} s wall, {result['fit_cpu_seconds']:.0f} CPU-s), epochs {result['epochs']}, "
        f"best val Dice {[round(d, 3) for d in result['best_val_dice']]}, OOF Dice {result['oof_dice']:.3f}, "
        f"demo Dice {result['demo_dice']:.3f}, peak RSS {mib(result['train_peak_rss'])} training / "
        f"{mib(result['peak_rss'])} in all, prediction {result['predict_seconds']:.0f} s; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return result


# ------------------------------------------------------------------ report


def table(results: list[dict]) -> list[str]:
    """Markdown rows: each measure with its ratio to the first (baseline) pair."""
    base = results[0]
    columns = [
        ("parameters (M)", lambda r: r["params"] / 1e6, "{:.2f}"),
        ("training samples/s", lambda r: r["samples_per_second"], "{:.1f}"),
        ("peak RSS training (MiB)", lambda r: r["train_peak_rss"] / 2**20, "{:,.0f}"),
        ("of it above imports (MiB)", lambda r: (r["train_peak_rss"] - r["start_rss"]) / 2**20, "{:,.0f}"),
        ("demo Dice", lambda r: r["demo_dice"], "{:.3f}"),
        ("stage-1 OOF Dice", lambda r: r["oof_dice"], "{:.3f}"),
        ("prediction s", lambda r: r["predict_seconds"], "{:.0f}"),
    ]
    lines = [
        "| architecture + encoder | " + " | ".join(name for name, _, _ in columns) + " | epochs per fold |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for r in results:
        cells = []
        for _, value, form in columns:
            ratio = f"{value(r) / value(base):.2f}x" if value(base) else "-"
            cells.append(f"{form.format(value(r))} ({ratio})")
        name = r["pair"].replace("+", " + ") + (" (baseline)" if r is base else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(map(str, r['epochs']))} |")
    return lines


def section(results: list[dict], args, machine: str, loads: tuple) -> str:
    """The "## Encoder table" section of docs/benchmarks.md for ``results``."""
    pairs = " ".join(r["pair"] for r in results)
    epoch_option = f" --epochs {args.epochs}" if args.epochs else ""
    command = (
        f"python benchmarks/bench_models.py --budget {args.budget:g}{epoch_option} --threads {args.threads} "
        f"--pairs {pairs}"
    )
    epochs = args.epochs or demo_config()["train"]["epochs"]
    prose = f"""`{command} --write` ({time.strftime("%Y-%m-%d %H:%M")}; {machine}; load average {loads[0]:.2f}
    before, {loads[1]:.2f} after). The demo (`config.yaml`: 8 train slides of 4 patients, 2 test slides, 4 folds,
    64 px inputs, batch 8, {epochs} epochs, light augmentations, random weights) trained by each pair at an equal
    budget of {args.budget:g} s of training wall time ({args.budget / 4:g} s per fold, `train_fold(max_seconds=...)`;
    {args.threads} torch thread{"s" if args.threads > 1 else ""}, one pair at a time, each in a fresh process), then
    predicted and scored as the workflow does (2 flips, gate 0.5, threshold 0.5). Demo Dice: the 4-fold ensemble on
    the test slides against the demo's truth; stage-1 OOF Dice: each train slide by the fold model that held it out
    (mean over slides). Samples/s: training samples over training time, validation excluded. Peak RSS: `VmHWM`
    of the pair's process after training; above imports: less its RSS before the first network was built.
    Prediction: the 8 out-of-fold and 2 test slides, scoring excluded. Ratios are to the
    baseline row. Epochs per fold: the last one may be partial; the cosine schedule counts {epochs}, so a pair
    stopped early ends at a higher learning rate."""
    paragraph = textwrap.fill(" ".join(prose.split()), width=100, break_on_hyphens=False, break_long_words=False)
    text = f"{SECTION}\n\n{paragraph}\n\n" + "\n".join(table(results))
    return text + "\n"


def replace_section(document: str, text: str) -> str:
    """``document`` with its "## Encoder table" section (up to the next "## " heading) replaced by ``text``,
    or with ``text`` appended when it has none; applying it twice gives the same document."""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: text + "\n", document, count=1).rstrip("\n") + "\n"
    return document.rstrip("\n") + "\n\n" + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=150, help="training seconds per pair, over its folds")
    parser.add_argument("--pairs", nargs="+", default=PAIRS, help="ARCHITECTURE+ENCODER; the first is the baseline")
    parser.add_argument(
        "--epochs", type=int, default=None, help="train.epochs (the schedule's length; default config.yaml's 12)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per pair (default 1)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_models"), help="where files go")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (and reuse its data next time)")
    parser.add_argument("--write", action="store_true", help="replace the Encoder table section of docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    import segmentation_models_pytorch as smp
    import timm
    import torch

    config = demo_config()
    for pair in args.pairs:
        pair_model(config, pair)  # refuse a bad pair before any work
    loads = [os.getloadavg()[0]]
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, timm {timm.__version__}, smp {smp.__version__}"
    )
    print(f"machine: {machine}; load average {loads[0]:.2f} at start; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    if not args.keep and args.workdir.exists() and any(args.workdir.iterdir()):
        # Without --keep the folder is removed at the end: only one this run made.
        raise SystemExit(f"{args.workdir}: not empty; pass --keep to reuse it, or name a new folder")
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        prepare(args.workdir, config, threads=2)
        results = [measure(pair, args) for pair in args.pairs]
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    text = section(results, args, machine, tuple(loads))
    print("\n" + text)
    if args.write:
        DOC.write_text(replace_section(DOC.read_text(), text))
        print(f"wrote the {SECTION[3:]!r} section of {DOC}")


if __name__ == "__main__":
    main()
