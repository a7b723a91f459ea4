"""Where training and prediction spend their wall time: the model's own forward/backward against everything around it.

Three generated slides (``bench_infer.generate_slide``: stained tissue over
the left three quarters, glass on the right, glomeruli 150-400 px across;
``--size`` square, default 4096) are written as slide stores
(``tests.builders.write_slide_store``) under ``--workdir``; two are
training slides (fold 1), one is fold 0's validation slide. The network is
the demo's (``tilepipe.config.defaults("model")``: resnet18, centre 32,
decoder 16, CBAM, hypercolumns, deep supervision, classification head;
random weights), on the CPU with 2 torch threads. Two geometries:

- demo: the schema defaults (tiles 512 / shift 256, input 64, batch 8,
  ``light`` augmentations, 2 flips at prediction);
- recipe: tiles 1024 / shift 512, input 320, ``recipe`` augmentations,
  batch 4 (16 would need ~15 GB on the CPU, bench_train_memory.py), 1 flip.

For each geometry:

1. one training epoch: ``FoldTrainer.train_epoch`` (``tilepipe.training.trainer``)
   on ``--samples`` balanced tiles (the fold's training tiles cut to
   ``--samples / 2`` masked and as many unmasked, so the epoch has about
   that many), with timers wrapped around the model's ``forward``,
   ``Tensor.backward``, the loss, the optimizer step, the wait for the next
   batch and ``validate`` (``--valid`` validation tiles), after one untimed
   warm-up step at the same shapes (oneDNN sets up its kernels on first use);
2. one prediction: ``predict_slide`` of the validation slide (no
   classification gate: a random head passes nothing or everything; centres
   without tissue skipped) with timers around the model's ``encode`` /
   ``classify`` / ``segment``, the tissue check, the window reads, the input
   scaling and the rest of the ensemble;
3. the loader alone: the epoch's ``TileDataset`` through ``make_loader``
   with ``num_workers`` 0, 1 and 2 (workers start anew every epoch, as the
   trainer's do), no model; samples per wall second and per CPU second
   (this process and its workers).

Then FLOPs per training sample (forward + backward, ``torch.utils.flop_counter``
on meta tensors) of the network here and of the recipe's se_resnext101_32x4d
U-Net at 320 px, to say what GPU rate one loader core can feed.

    python benchmarks/bench_overhead.py [--size 4096] [--samples 64] [--valid 16] [--geometries demo recipe]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import platform
import re
import resource
import shutil
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.builders
from bench_infer import generate_slide

from tests.builders import write_slide_store
from tilepipe.config import defaults
from tilepipe.data.sampler import sample_epoch
from tilepipe.data.tile_dataset import TileDataset, make_loader
from tilepipe.data.tile_index import build_tile_index
from tilepipe.inference import predict as predict_module
from tilepipe.inference.ensemble import Ensemble
from tilepipe.inference.predict import predict_slide
from tilepipe.model import FIRST_PLACE_SETTINGS, build_model
from tilepipe.model.encoders import ENCODERS
from tilepipe.seeding import derive_seed
from tilepipe.training.trainer import FoldTrainer, fold_inputs

SATURATION = 30  # tiles.saturation_threshold
GEOMETRIES = {
    # tiles, shift, input px, batch, augmentations, prediction flips
    "demo": {
        "tile": 512,
        "shift": 256,
        "input_size": 64,
        "batch_size": 8,
        "augment": "light",
        "tta": ["none", "hflip"],
    },
    "recipe": {"tile": 1024, "shift": 512, "input_size": 320, "batch_size": 4, "augment": "recipe", "tta": ["none"]},
}
# Datasheet peaks of an NVIDIA V100 (SXM2), TFLOP/s: fp32, and fp16 on tensor cores.
V100_PEAK = {"fp32": 15.7, "fp16 tensor cores": 125.0}


# ------------------------------------------------------------------ data


def slides(workdir: Path, size: int, seed: int) -> dict[str, Path]:
    """Write (once) three generated slide stores under ``workdir``; return their paths by slide id."""
    stores = {}
    for k in range(3):
        path = workdir / f"slide{k}_{size}.zarr"
        if not path.exists():
            image, mask, _, _ = generate_slide(size, size, 3 * size // 4, max(4, size * size // 1_400_000), seed + k)
            write_slide_store(path, image, mask)
        stores[f"slide{k}_{size}"] = path
    return stores


def fold_of(stores: dict[str, Path]) -> pd.DataFrame:
    """Folds: the last slide is fold 0 (fold 0's validation slide), the others fold 1."""
    ids = list(stores)
    return pd.DataFrame({"slide": ids, "patient": ids, "fold": [1] * (len(ids) - 1) + [0]})


def settings_for(geometry: dict, seed: int) -> dict:
    """The trainer's settings: the schema's defaults with the geometry's input, batch and augmentations, on the CPU."""
    train = {
        **defaults("train"),
        "device": "cpu",
        "epochs": 1,
        "num_workers": 0,
        "input_size": geometry["input_size"],
        "batch_size": geometry["batch_size"],
        "augmentations": geometry["augment"],
        "log_every": 10**9,
    }
    return {
        "seed": seed,
        "model": defaults("model"),
        "loss": defaults("loss"),
        "train": train,
        "sampling": defaults("sampling"),
    }


def cut(tiles: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Return at most ``per_class`` masked and ``per_class`` unmasked rows of ``tiles`` (random, in index order)."""
    rng = np.random.default_rng(seed)
    keep = []
    for masked in (True, False):
        index = tiles.index[tiles["is_masked"] == masked].to_numpy()
        keep.append(rng.choice(index, min(per_class, index.size), replace=False))
    return tiles.loc[np.sort(np.concatenate(keep))].reset_index(drop=True)


# ------------------------------------------------------------------ timers


class Timers(defaultdict):
    """Seconds per name (float), with :meth:`wrap` to time a callable into a name."""

    def __init__(self):
        super().__init__(float)

    def wrap(self, fn, name):
        """Return ``fn`` timed into ``name`` (a string, or a callable returning one at call time)."""

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self[name() if callable(name) else name] += time.perf_counter() - started

        return timed


class TimedLoader:
    """A DataLoader whose iteration times each ``next`` (the wait for a batch) into ``timers[name]``."""

    def __init__(self, loader, timers: Timers, name: str):
        self.loader, self.timers, self.name = loader, timers, name

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self.timers[self.name] += time.perf_counter() - started
                return
            self.timers[self.name] += time.perf_counter() - started
            yield batch


@contextlib.contextmanager
def instrumented_trainer(trainer: FoldTrainer, timers: Timers):
    """Time the trainer's model forward, loss, backward, optimizer step, batch waits and validation."""
    model, loss = trainer.model, trainer.loss
    make_loader_of = trainer._loader
    backward = torch.Tensor.backward
    model.forward = timers.wrap(model.forward, lambda: "forward" if model.training else "validation forward")
    loss.forward = timers.wrap(loss.forward, lambda: "loss" if model.training else "validation loss")
    trainer.optimizer.step = timers.wrap(trainer.optimizer.step, "optimizer step")
    trainer.validate = timers.wrap(trainer.validate, "validation")
    trainer._loader = lambda tiles, augment, shuffle, epoch: TimedLoader(
        make_loader_of(tiles, augment, shuffle, epoch), timers, "batch wait" if shuffle else "validation batch wait"
    )
    torch.Tensor.backward = timers.wrap(backward, "backward")
    try:
        yield
    finally:
        torch.Tensor.backward = backward
        for owner, name in ((model, "forward"), (loss, "forward"), (trainer, "validate"), (trainer, "_loader")):
            del owner.__dict__[name]


@contextlib.contextmanager
def instrumented_prediction(model: torch.nn.Module, timers: Timers):
    """Time the model's encode/classify/segment and predict_slide's tissue check, reads, input scaling, ensemble."""
    patched = [
        (predict_module, "tissue_fractions", "tissue check"),
        (predict_module._WindowReader, "read_row", "window reads"),
        (predict_module._WindowReader, "inputs", "input scaling (resize, normalise)"),
        (Ensemble, "predict_centres", "ensemble"),
    ]
    originals = [getattr(owner, name) for owner, name, _ in patched]
    for (owner, name, label), original in zip(patched, originals, strict=True):
        setattr(owner, name, timers.wrap(original, label))
    for name in ("encode", "classify", "segment"):
        setattr(model, name, timers.wrap(getattr(model, name), "model"))
    try:
        yield
    finally:
        for (owner, name, _), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)
        for name in ("encode", "classify", "segment"):
            del model.__dict__[name]


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (DataLoader workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ------------------------------------------------------------------ the measurements


def warm_up(trainer: FoldTrainer, geometry: dict) -> None:
    """One untimed training forward/backward and one eval forward at the epoch's shapes; the weights are restored.

    The first call at a new shape sets up oneDNN kernels (seconds at 64 px);
    a real run pays that once, not per epoch or window.
    """
    model, size, batch = trainer.model, geometry["input_size"], geometry["batch_size"]
    state = copy.deepcopy(model.state_dict())
    image = torch.randn(batch, 3, size, size)
    mask = (torch.rand(batch, 1, size, size) > 0.9).float()
    model.train()
    loss, _ = trainer.loss(model(image), mask, mask.flatten(1).amax(1))
    loss.backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.eval()(image)
    model.load_state_dict(state)


def train_epoch(geometry: dict, tiles: pd.DataFrame, stores: dict[str, Path], args) -> dict:
    """Train one instrumented epoch; return its timers, wall seconds, samples and steps."""
    settings = settings_for(geometry, args.seed)
    torch.use_deterministic_algorithms(settings["train"]["deterministic"], warn_only=True)  # as train_fold does
    inputs = fold_inputs(tiles, fold_of(stores), 0, {k: str(v) for k, v in stores.items()}, settings["sampling"])
    inputs = dataclasses.replace(
        inputs,
        train=cut(inputs.train, args.samples // 2, args.seed),
        valid=inputs.valid.sample(min(args.valid, len(inputs.valid)), random_state=args.seed).reset_index(drop=True),
    )
    trainer = FoldTrainer(inputs, 0, settings, torch.device("cpu"))
    samples = len(sample_epoch(inputs.train, epoch=1, seed=args.seed, fold=0))
    warm_up(trainer, geometry)
    timers = Timers()
    with instrumented_trainer(trainer, timers):
        started = time.perf_counter()
        trainer.train_epoch(1)
        wall = time.perf_counter() - started
    steps = samples // geometry["batch_size"]
    return {"timers": timers, "wall": wall, "samples": steps * geometry["batch_size"], "steps": steps, "inputs": inputs}


def predict(geometry: dict, store: Path, workdir: Path, seed: int) -> dict:
    """Predict ``store`` with an instrumented random-weight demo network; return timers, wall seconds and stats."""
    torch.manual_seed(seed)
    model = build_model(defaults("model")).eval()
    batch = defaults("inference")["batch_size"]
    with torch.inference_mode():  # untimed warm-up at the batch's shape (see warm_up)
        model.segment(model.encode(torch.zeros(batch, 3, geometry["input_size"], geometry["input_size"])))
    timers = Timers()
    out = workdir / "prediction.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with instrumented_prediction(model, timers):
        started = time.perf_counter()
        stats = predict_slide(
            store,
            out,
            [model],
            tile_size=geometry["tile"],
            input_size=geometry["input_size"],
            read_level="auto",
            tta=geometry["tta"],
            clf_threshold=None,
            min_tissue=0.0,
            saturation_threshold=SATURATION,
            batch_size=batch,
            device="cpu",
            amp=False,
            progress=False,
        )
        wall = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return {"timers": timers, "wall": wall, "stats": stats}


def loader_rates(geometry: dict, inputs, workers: list[int], seed: int, minimum: int) -> dict[int, dict]:
    """Samples per wall and per CPU second of the training loader alone (no model), per ``num_workers``.

    The samples are balanced epochs of the (cut) training tiles, epoch after
    epoch, until there are at least ``minimum``.
    """
    epochs, epoch = [], 1
    while sum(len(e) for e in epochs) < minimum:
        epochs.append(sample_epoch(inputs.train, epoch=epoch, seed=seed, fold=0))
        epoch += 1
    samples = pd.concat(epochs, ignore_index=True)
    settings = settings_for(geometry, seed)
    from tilepipe.training.trainer import augmentations

    rates = {}
    for n in workers:
        dataset = TileDataset(
            samples,
            {k: str(v) for k, v in inputs.stores.items()},
            input_size=geometry["input_size"],
            augment=augmentations(settings["train"]["augmentations"]),
            level="auto",
            seed=derive_seed(seed, 0),
            epoch=1,
        )
        loader = make_loader(
            dataset, geometry["batch_size"], shuffle=True, num_workers=n, device_type="cpu", seed=seed, epoch=1
        )
        wall, cpu = time.perf_counter(), cpu_seconds()
        count = sum(batch["image"].shape[0] for batch in loader)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        rates[n] = {"samples": count, "wall": wall, "cpu": cpu}
        print(
            f"  loader, num_workers {n}: {count} samples in {wall:.2f} s wall ({count / wall:.1f}/s), "
            f"{cpu:.2f} CPU-s ({count / cpu:.1f}/s per core); load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return rates


def training_flops(settings: dict, input_size: int) -> float:
    """FLOPs of one training sample (forward + backward of every output's sum) of the network ``settings``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors
    (shapes only), batch 2 (BatchNorm in training mode), per sample.
    """
    from torch.utils.flop_counter import FlopCounterMode

    __import__(ENCODERS[settings["encoder"]].library)  # its import-time tensors must not land on the meta device
    with torch.device("meta"):
        model = build_model({**settings, "encoder_weights": None}).train()
        image = torch.zeros(2, 3, input_size, input_size)
    counter = FlopCounterMode(display=False)
    with counter:
        outputs = model(image)
        leaves = [v for value in outputs.values() for v in (value if isinstance(value, list | tuple) else [value])]
        sum(leaf.float().sum() for leaf in leaves).backward()
    return counter.get_total_flops() / 2


# ------------------------------------------------------------------ report


def share(part: float, whole: float) -> str:
    return f"{part:.2f} s ({part / whole:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="slide side in pixels (default 4096)")
    parser.add_argument("--samples", type=int, default=64, help="training samples per epoch, about (default 64)")
    parser.add_argument("--valid", type=int, default=16, help="validation tiles (default 16)")
    parser.add_argument("--loader-samples", type=int, default=256, help="samples per loader measurement (256)")
    parser.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=GEOMETRIES)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader num_workers to try")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the machine has)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_overhead"))
    parser.add_argument("--keep", action="store_true", help="keep the slide stores in --workdir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # The timed optimizer.step makes the LR scheduler warn that step was overridden; it still runs first.
    warnings.filterwarnings("ignore", message=re.escape("Seems like `optimizer.step()` has been overridden"))
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.1f} "
        f"at start; {time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        stores = slides(args.workdir, args.size, args.seed)
        for name in args.geometries:
            geometry = GEOMETRIES[name]
            tiles = pd.concat(
                [
                    build_tile_index(path, slide, geometry["tile"], geometry["shift"], saturation_threshold=SATURATION)
                    for slide, path in stores.items()
                ],
                ignore_index=True,
            )
            print(f"{name}: {geometry}", flush=True)
            epoch = train_epoch(geometry, tiles, stores, args)
            print(
                f"  epoch: {epoch['samples']} samples in {epoch['steps']} steps, {epoch['wall']:.1f} s; "
                + ", ".join(f"{k} {v:.2f} s" for k, v in epoch["timers"].items()),
                flush=True,
            )
            prediction = predict(geometry, list(stores.values())[-1], args.workdir, args.seed)
            print(
                f"  prediction: {prediction['stats']}, {prediction['wall']:.1f} s; "
                + ", ".join(f"{k} {v:.2f} s" for k, v in prediction["timers"].items()),
                flush=True,
            )
            rates = loader_rates(geometry, epoch["inputs"], args.workers, args.seed, args.loader_samples)
            results[name] = (epoch, prediction, rates)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)

    flops = {
        (name, geometry["input_size"]): training_flops(defaults("model"), geometry["input_size"])
        for name, geometry in GEOMETRIES.items()
        if name in results
    }
    recipe_flops = training_flops(FIRST_PLACE_SETTINGS, 320)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")

    print("\n| geometry | run | wall s | model s (share) | around the model | model samples/s |")
    print("|---|---|---:|---|---|---:|")
    for name, (epoch, prediction, _) in results.items():
        t = epoch["timers"]
        loop = epoch["wall"] - t["validation"]
        model = t["forward"] + t["backward"]
        rest = loop - model - t["loss"] - t["optimizer step"] - t["batch wait"]
        print(
            f"| {name} | training epoch ({epoch['samples']} samples, batch {GEOMETRIES[name]['batch_size']}), "
            f"validation excluded | {loop:.1f} | forward + backward {share(model, loop)} "
            f"| batch wait {share(t['batch wait'], loop)}, loss {share(t['loss'], loop)}, optimizer step "
            f"{share(t['optimizer step'], loop)}, other {share(rest, loop)} | {epoch['samples'] / model:.1f} |"
        )
        valid = t["validation"]
        valid_model = t["validation forward"]
        print(
            f"| {name} | validation ({len(epoch['inputs'].valid)} tiles) | {valid:.1f} | forward "
            f"{share(valid_model, valid)} | batch wait {share(t['validation batch wait'], valid)}, loss "
            f"{share(t['validation loss'], valid)} | {len(epoch['inputs'].valid) / valid_model:.1f} |"
        )
        p, wall = prediction["timers"], prediction["wall"]
        windows = prediction["stats"]["segmented"]
        flips = len(GEOMETRIES[name]["tta"])
        print(
            f"| {name} | prediction ({windows} windows x {flips} flip(s), {prediction['stats']['skipped_background']} "
            f"background skipped) | {wall:.1f} | encode + segment {share(p['model'], wall)} "
            f"| tissue check {share(p['tissue check'], wall)}, reads {share(p['window reads'], wall)}, input scaling "
            f"{share(p['input scaling (resize, normalise)'], wall)}, ensemble around the model "
            f"{share(p['ensemble'] - p['model'], wall)}, other "
            f"{share(wall - p['ensemble'] - p['tissue check'] - p['window reads'] - p['input scaling (resize, normalise)'], wall)} "
            f"| {windows * flips / p['model']:.1f} |"
        )

    print(
        "\n| geometry | loader samples/s, workers 0 (wall / per CPU-s) | workers 1 | workers 2 "
        "| best per loader core | model here, samples/s | FLOPs per training sample, this network "
        "| one loader core feeds (this network) | same, recipe se_resnext101 U-Net |"
    )
    print("|---|---|---|---|---:|---:|---|---|---|")
    for name, (epoch, _, rates) in results.items():
        geometry = GEOMETRIES[name]
        # Per loader core: the best samples per CPU-second of the worker counts tried. With 0 workers the
        # main process's torch and OpenCV thread pools add overhead; with workers, each epoch's start-up does.
        per_core = max(r["samples"] / r["cpu"] for r in rates.values())
        walls = {n: f"{r['samples'] / r['wall']:.1f} / {r['samples'] / r['cpu']:.1f}" for n, r in rates.items()}
        t = epoch["timers"]
        model_rate = epoch["samples"] / (t["forward"] + t["backward"])
        own = flops[(name, geometry["input_size"])]
        recipe = recipe_flops * (geometry["input_size"] / 320) ** 2
        print(
            f"| {name} ({geometry['input_size']} px) | {walls.get(0, '-')} | {walls.get(1, '-')} "
            f"| {walls.get(2, '-')} | {per_core:.1f} | {model_rate:.1f} | {own / 1e9:.1f} GFLOP "
            f"| {per_core * own / 1e12:.2f} TFLOP/s | {per_core * recipe / 1e12:.1f} TFLOP/s "
            f"({recipe / 1e9:.0f} GFLOP per sample at {geometry['input_size']} px) |"
        )
    recipe_core = max(r["samples"] / r["cpu"] for r in results["recipe"][2].values()) if "recipe" in results else None
    for precision, peak in V100_PEAK.items():
        gpu_rate = peak * 1e12 / recipe_flops
        cores = f"; at least {gpu_rate / recipe_core:.1f} loader cores at this peak" if recipe_core else ""
        print(
            f"V100 datasheet peak {peak} TFLOP/s ({precision}): the recipe network at 320 px would run at most "
            f"{gpu_rate:.0f} samples/s ({recipe_flops / 1e9:.0f} GFLOP per training sample){cores}"
        )


if __name__ == "__main__":
    main()
