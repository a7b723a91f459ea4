"""Training of one fold: the recipe's loop, resumable and reproducible.

Every epoch draws its balanced tiles from the sampler and seeds every
generator from ``(seed, fold, epoch)``, so an epoch's result depends only
on the weights it starts from. A resumable state (model, optimizer,
scheduler, scaler, RNG states, epoch, metrics) is written after every
epoch outside the declared outputs; a rerun after a kill resumes from it,
and on the CPU ends with byte-identical weights. The state belongs to its
settings and training data (a digest of both); it is deleted once the
declared outputs are written, so a rerun of a finished job (new code, new
inputs) trains again.

Stage 2 may start from a checkpoint (``init_path``: the fold's stage-1
model) instead of fresh weights.

A time budget (``max_seconds``) ends training at the first batch boundary
after its deadline: that epoch is validated and recorded with the samples
it saw, and the outputs are written as after a full run (the learning-rate
schedule still counts ``train.epochs``). Without one nothing changes.

With a stain reference (``stain_reference``, :mod:`tilepipe.data.stain`),
every slide's tiles are normalised to it, and the checkpoint's geometry
records it (key ``stain``) for inference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from tilepipe.atomic import atomic_output
from tilepipe.data.augment import PRESETS, build_augmentations
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tilepipe.data.sampler import background_filtered, sample_epoch, training_tiles, validation_tiles
from tilepipe.data.stain import normalisation_settings, slide_map
from tilepipe.data.tile_dataset import TileDataset, make_loader
from tilepipe.errors import InputError
from tilepipe.model import build_model, read_checkpoint, save_checkpoint
from tilepipe.model.build import resolve_settings
from tilepipe.model.device import autocast, select_device
from tilepipe.model.losses import SegmentationLoss
from tilepipe.model.state_dicts import load_state_dict_checked
from tilepipe.seeding import derive_seed
from tilepipe.stores.slide import SlideStore
from tilepipe.training.rng import rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_dice", "val_clf_acc", "samples", "seconds"]


@dataclass(frozen=True)
class FoldInputs:
    """What one fold trains on: tile rows (tile index columns), slide stores by id,
    and pseudo-label stores by id for slides whose labels live elsewhere."""

    train: pd.DataFrame
    valid: pd.DataFrame
    stores: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)


def fold_inputs(
    tiles: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    stores: dict[str, str],
    sampling: dict,
    pseudo_tiles: pd.DataFrame | None = None,
    pseudo_labels: dict[str, str] | None = None,
) -> FoldInputs:
    """Split the tile index into the fold's training and validation tiles.

    ``pseudo_tiles`` (tiles of pseudo-labelled slides) join every fold's
    training tiles, as the recipe's: masked ones only, through the same
    background filters as the labelled tiles (``img_std > 10`` in the recipe); ``pseudo_labels`` maps
    their slides to pseudo-label stores. Raises InputError when the fold has
    no validation tiles or no training tiles of either class, before any
    training starts.
    """
    filters = {"min_tissue_ratio": sampling.get("min_tissue_ratio"), "min_img_std": sampling.get("min_img_std")}
    train = training_tiles(tiles, folds, fold, **filters)
    valid = validation_tiles(tiles, folds, fold, **filters)
    if pseudo_tiles is not None and len(pseudo_tiles):
        overlap = sorted(set(pseudo_tiles["slide"]) & set(folds["slide"]))
        if overlap:
            raise InputError(None, f"pseudo-labelled slide(s) {', '.join(overlap)} are train slides (a label leak)")
        masked = background_filtered(pseudo_tiles[pseudo_tiles["is_masked"]], **filters)
        train = pd.concat([train, masked], ignore_index=True)
    if valid.empty:
        raise InputError(None, f"fold {fold} has no validation tiles (check folds and sampling filters)")
    sample_epoch(train, epoch=0, seed=0, fold=fold)  # raises when a class is missing
    return FoldInputs(train, valid, stores, dict(pseudo_labels or {}))


def training_geometry(tiles: pd.DataFrame, train: dict, mpp: float | None = None, stain: dict | None = None) -> dict:
    """The input geometry a model trained on ``tiles`` with the ``train`` settings expects at inference.

    Returns the keys of :data:`tilepipe.model.checkpoint.GEOMETRY_KEYS`: the
    tiles' level-0 side, ``train.input_size`` and ``train.read_level``, the
    training slides' pixel size ``mpp`` in micrometres (``data.mpp``; None
    when not given) and the ImageNet normalisation the loader applies;
    with ``stain`` (:func:`tilepipe.data.stain.normalisation_settings`) also
    the key ``stain``. Raises InputError when the tiles have more than one size.
    """
    sizes = sorted(set(tiles["size"].astype(int)))
    if len(sizes) != 1:
        raise InputError(None, f"training tiles of several sizes {sizes}: a model has one input geometry")
    geometry = {
        "tile_size": sizes[0],
        "input_size": int(train["input_size"]),
        "read_level": train["read_level"],
        "mpp": None if mpp is None else float(mpp),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    if stain is not None:
        geometry["stain"] = stain
    return geometry


def augmentations(spec: str | list[dict]):
    """The ``train.augmentations`` setting -> a pipeline: a preset name (recipe, light), "none" or a list of transforms."""
    if spec == "none":
        return None
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise InputError(None, f"train.augmentations: expected {', '.join(PRESETS)}, none or a list, got {spec!r}")
        return build_augmentations(PRESETS[spec])
    return build_augmentations(spec)


def settings_digest(settings: dict) -> str:
    """Hash of the settings a resumable state belongs to."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def inputs_digest(inputs: FoldInputs, init_path: str | os.PathLike | None = None) -> str:
    """Hash of what a fold trains on: its tile rows, its stores and label stores by id, the init checkpoint's bytes."""
    digest = hashlib.sha256()
    for table in (inputs.train, inputs.valid):
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    digest.update(json.dumps([sorted(inputs.stores.items()), sorted(inputs.labels.items())]).encode())
    if init_path is not None:
        digest.update(Path(init_path).read_bytes())
    return digest.hexdigest()[:16]


def initialise_from(model: torch.nn.Module, path: str | os.PathLike, model_settings: dict) -> None:
    """Load the weights of the checkpoint at ``path`` into ``model`` (built from ``model_settings``).

    Raises InputError naming ``path`` when the checkpoint was built with
    other model settings (encoder weights aside: they are overwritten).
    """
    checkpoint = read_checkpoint(path)
    stored = {k: v for k, v in checkpoint["settings"].items() if k != "encoder_weights"}
    wanted = {k: v for k, v in resolve_settings(model_settings).items() if k != "encoder_weights"}
    if stored != wanted:
        changed = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
        raise InputError(path, f"initial checkpoint has other model settings ({', '.join(changed)}) than model")
    load_state_dict_checked(model, checkpoint["state_dict"], path, "the configured model")


def _to_device(
    batch: dict, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
    mask = batch["mask"].to(device, non_blocking=True)
    clf = batch["clf"].to(device, non_blocking=True)
    return image, mask, clf


class FoldTrainer:
    """Trains one fold from ``settings`` (sections seed, model, loss, train, sampling; ``mpp``, the
    training slides' pixel size in micrometres, recorded in the checkpoint's geometry). ``stain``: the
    stain normalisation (:func:`tilepipe.data.stain.normalisation_settings`) or None."""

    def __init__(
        self,
        inputs: FoldInputs,
        fold: int,
        settings: dict,
        device: torch.device,
        init_path: str | os.PathLike | None = None,
        stain: dict | None = None,
    ):
        self.inputs = inputs
        self.fold = fold
        self.settings = settings
        self.seed = settings["seed"]
        self.train_cfg = settings["train"]
        self.device = device
        self.augment = augmentations(self.train_cfg["augmentations"])
        seed_everything(derive_seed(self.seed, fold))
        if init_path is None:
            self.model = build_model(settings["model"])
        else:
            self.model = build_model({**settings["model"], "encoder_weights": None})
            initialise_from(self.model, init_path, settings["model"])
        self.model = self.model.to(device)
        self.stain_maps = None
        if stain is not None:
            self.stain_maps = {slide: slide_map(SlideStore(path), stain) for slide, path in inputs.stores.items()}
            log.info("stain normalisation of each slide (lab scale, offset): %s", self.stain_maps)
        digested = {"settings": settings, "inputs": inputs_digest(inputs, init_path)}
        self.digest = settings_digest(digested if stain is None else {**digested, "stain": stain})
        if self.train_cfg["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = SegmentationLoss(settings["loss"])
        # The fused kernel is one pass over all parameters (on the CPU ~4x faster than
        # the per-tensor loop, 15 % of a demo training step); same update rule.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.train_cfg["lr"],
            weight_decay=self.train_cfg["weight_decay"],
            fused=device.type in ("cpu", "cuda"),
        )
        # As the 1st-place CosineLR (t0 = epochs - 1): lr in the first epoch, min_lr in the last.
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, self.train_cfg["epochs"] - 1), eta_min=self.train_cfg["min_lr"]
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and self.train_cfg["amp"])
        self.geometry = training_geometry(inputs.train, self.train_cfg, settings.get("mpp"), stain)
        self.epoch = 0
        self.best_dice = -math.inf
        self.metrics: list[dict] = []
        # time.monotonic() after which training stops at the next batch boundary; None = no budget.
        self.deadline: float | None = None

    def past_deadline(self) -> bool:
        """Whether the time budget (``self.deadline``, a ``time.monotonic()`` value) is spent."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    # -- resumable state ---------------------------------------------------
    def state(self) -> dict:
        return {
            "digest": self.digest,
            "fold": self.fold,
            "epoch": self.epoch,
            "best_dice": self.best_dice,
            "metrics": self.metrics,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def save_state(self, path: Path) -> None:
        with atomic_output(path) as tmp:
            torch.save(self.state(), tmp)

    def load_state(self, path: Path) -> bool:
        """Resume from ``path`` if it belongs to these settings; return whether it did."""
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("digest") != self.digest or state.get("fold") != self.fold:
            log.info("ignoring resumable state %s: it was made with other settings or data", path)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.best_dice = state["best_dice"]
        self.metrics = state["metrics"]
        log.info("resumed fold %d from %s after epoch %d", self.fold, path, self.epoch)
        return True

    # -- one epoch ---------------------------------------------------------
    def _loader(self, tiles: pd.DataFrame, augment, shuffle: bool, epoch: int):
        cfg = self.train_cfg
        dataset = TileDataset(
            tiles,
            self.inputs.stores,
            labels=self.inputs.labels,
            input_size=cfg["input_size"],
            augment=augment,
            level=cfg["read_level"],
            seed=derive_seed(self.seed, self.fold),
            epoch=epoch,
            stain=self.stain_maps,
        )
        return make_loader(
            dataset,
            batch_size=cfg["batch_size"],
            shuffle=shuffle,
            num_workers=cfg["num_workers"],
            device_type=self.device.type,
            seed=derive_seed(self.seed, self.fold, epoch),
            epoch=epoch,
            drop_last=shuffle,  # a training batch of one breaks BatchNorm
        )

    def train_epoch(self, epoch: int) -> dict:
        """Train one epoch (1-based); return its metrics row."""
        seed_everything(derive_seed(self.seed, self.fold, epoch))
        samples = sample_epoch(self.inputs.train, epoch=epoch, seed=self.seed, fold=self.fold)
        loader = self._loader(samples, self.augment, shuffle=True, epoch=epoch)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        total, seen = 0.0, 0
        for step, batch in enumerate(loader, 1):
            image, mask, clf = _to_device(batch, self.device, self.train_cfg["channels_last"])
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.train_cfg["amp"], self.train_cfg["cpu_bf16"]):
                outputs = self.model(image)
            loss, _ = self.loss({k: _float(v) for k, v in outputs.items()}, mask, clf)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item() * image.shape[0]
            seen += image.shape[0]
            if step % self.train_cfg["log_every"] == 0:
                rate = seen / (time.perf_counter() - started)
                log.info(
                    "fold %d epoch %d step %d/%d loss %.4f lr %.2e %.1f samples/s",
                    self.fold,
                    epoch,
                    step,
                    len(loader),
                    total / seen,
                    lr,
                    rate,
                )
            if self.past_deadline():
                log.info("fold %d epoch %d: time budget spent after step %d/%d", self.fold, epoch, step, len(loader))
                break
        self.scheduler.step()
        valid = self.validate(epoch)
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": total / max(seen, 1),
            **valid,
            "samples": seen,
            "seconds": round(seconds, 3),
        }
        log.info(
            "fold %d epoch %d: train loss %.4f val loss %.4f dice %.4f clf acc %.3f (%.1f samples/s)",
            self.fold,
            epoch,
            row["train_loss"],
            row["val_loss"],
            row["val_dice"],
            row["val_clf_acc"],
            seen / seconds,
        )
        return row

    @torch.no_grad()
    def validate(self, epoch: int) -> dict:
        """Global tile Dice at 0.5 over the validation tiles, mean loss, clf-head accuracy.

        The accuracy is NaN for a model without a classification head. Raises
        InputError when there is no validation tile.
        """
        loader = self._loader(self.inputs.valid, None, shuffle=False, epoch=epoch)
        self.model.eval()
        has_classifier = self.model.has_classifier
        inter = union = 0.0
        loss_sum, n, clf_right = 0.0, 0, 0
        for batch in loader:
            image, mask, clf = _to_device(batch, self.device, self.train_cfg["channels_last"])
            with autocast(self.device, self.train_cfg["amp"], self.train_cfg["cpu_bf16"]):
                outputs = self.model(image)
            outputs = {k: _float(v) for k, v in outputs.items()}
            loss, _ = self.loss(outputs, mask, clf)
            pred = (outputs["logits"] > 0).float()
            inter += float((pred * mask).sum())
            union += float(pred.sum() + mask.sum())
            loss_sum += float(loss) * image.shape[0]
            n += image.shape[0]
            if has_classifier:
                clf_right += int(((outputs["clf"].view(-1) > 0).float() == clf.view(-1)).sum())
        if n == 0:
            raise InputError(None, f"fold {self.fold} has no validation tiles")
        dice = 1.0 if union == 0 else 2 * inter / union
        return {
            "val_loss": loss_sum / n,
            "val_dice": dice,
            "val_clf_acc": clf_right / n if has_classifier else float("nan"),
        }

    # -- the whole fold ----------------------------------------------------
    def fit(self, model_path: Path, metrics_path: Path, state_path: Path) -> None:
        """Train the remaining epochs; keep the best-Dice checkpoint at ``model_path``."""
        best_path = state_path.with_name("best.pt")
        if self.load_state(state_path):
            self.best_dice = _checkpoint_dice(best_path)
        else:
            best_path.unlink(missing_ok=True)
        for epoch in range(self.epoch + 1, self.train_cfg["epochs"] + 1):
            row = self.train_epoch(epoch)
            self.metrics.append(row)
            self.epoch = epoch
            if row["val_dice"] > self.best_dice or not best_path.exists():
                self.best_dice = row["val_dice"]
                extra = {"fold": self.fold, "epoch": epoch, "val_dice": row["val_dice"]}
                save_checkpoint(best_path, self.model, self.settings["model"], extra=extra, geometry=self.geometry)
            self.save_state(state_path)
            if self.past_deadline():
                break
        with atomic_output(metrics_path) as tmp:
            pd.DataFrame(self.metrics, columns=METRIC_COLUMNS).to_csv(tmp, index=False)
        with atomic_output(model_path) as tmp:
            shutil.copyfile(best_path, tmp)
        state_path.unlink()
        best_path.unlink()


def _checkpoint_dice(path: Path) -> float:
    """The validation Dice recorded in the best checkpoint at ``path``; -inf if there is none.

    A resumed run compares its epochs with this, not with the state's
    ``best_dice``: the checkpoint is what model.pt becomes, so if it was lost
    (or a kill came between writing it and the state) the epochs still to
    come must be measured against the weights actually kept.
    """
    if not path.is_file():
        return -math.inf
    try:
        return float(read_checkpoint(path)["extra"]["val_dice"])
    except (InputError, KeyError, TypeError, ValueError):
        log.warning("ignoring unreadable best checkpoint %s", path)
        path.unlink()
        return -math.inf


def _float(value):
    if isinstance(value, list):
        return [v.float() for v in value]
    return value.float()


def train_fold(
    tiles: pd.DataFrame,
    folds: pd.DataFrame,
    stores: dict[str, str],
    fold: int,
    settings: dict,
    model_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    state_path: str | os.PathLike,
    pseudo_tiles: pd.DataFrame | None = None,
    pseudo_labels: dict[str, str] | None = None,
    init_path: str | os.PathLike | None = None,
    stain_reference: dict | None = None,
    max_seconds: float | None = None,
) -> None:
    """Train fold ``fold`` and write its best checkpoint and per-epoch metrics.

    ``settings`` holds the config sections the job uses (seed, model, loss,
    train, sampling). ``state_path`` is the resumable state, kept outside
    the declared outputs. ``pseudo_tiles``/``pseudo_labels``: stage 2's
    pseudo-labelled slides (see :func:`fold_inputs`). ``init_path``: a
    checkpoint of the same model settings to start from instead of fresh
    weights (stage 2 with ``pseudo.init: stage1``). ``stain_reference``: the
    training slides' stain reference (:func:`tilepipe.data.stain.fit_reference`)
    every slide is normalised to, or None. ``max_seconds``: a wall-clock budget in seconds from the
    start of training (after the model is built); training stops at the first batch boundary after
    it, validates that epoch and writes the same outputs. None (the default): train every epoch.
    """
    if settings["train"]["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    inputs = fold_inputs(tiles, folds, fold, stores, settings["sampling"], pseudo_tiles, pseudo_labels)
    # Every epoch draws the same number of tiles; fewer than a batch would train nothing (the last
    # incomplete training batch is dropped).
    drawn = len(sample_epoch(inputs.train, epoch=0, seed=0, fold=fold))
    if drawn < settings["train"]["batch_size"]:
        raise InputError(
            None,
            f"fold {fold}'s balanced epoch draws {drawn} tiles, fewer than train.batch_size "
            f"{settings['train']['batch_size']}: no training step would run (lower the batch size or add slides)",
        )
    device = select_device(settings["train"]["device"], "train.device")
    log.info(
        "fold %d on %s: %d training tiles, %d validation tiles", fold, device, len(inputs.train), len(inputs.valid)
    )
    stain = None if stain_reference is None else normalisation_settings(stain_reference)
    trainer = FoldTrainer(inputs, fold, settings, device, init_path, stain)
    if max_seconds is not None:
        trainer.deadline = time.monotonic() + max_seconds
    trainer.fit(Path(model_path), Path(metrics_path), Path(state_path))
