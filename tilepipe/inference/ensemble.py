"""The fold ensemble with flip TTA: models x flips on one device, gated by the classification head.

Inputs are batches of windows scaled for the models, ``(b, 3, S, S)``
float32; outputs are, per window, the classification probability and,
for the windows that pass the gate, the kept centres of the mean
probability and of the ensemble's spread, both uint8 (the probability
stores' scale: ``round(p * 255)``; the spread ``round(min(2 sigma, 1) * 255)``,
sigma the standard deviation of the probability over the R = models x
flips runs, so 255 is the most the runs can disagree: half of them at 0,
half at 1).

With ``weights`` (one per model), the mean and the spread are weighted:
each model's flips share its weight, a model of weight 0 never runs, and
equal weights give exactly the unweighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tilepipe.errors import InputError
from tilepipe.inference.windows import CentreGrid, Window
from tilepipe.model.device import autocast
from tilepipe.stores.probability import PROBABILITY_SCALE

__all__ = ["FLIPS", "BatchPrediction", "Ensemble"]


# Flip name -> the tensor dims it reverses on (b, c, y, x); each flip is its own inverse.
FLIPS = {"none": (), "hflip": (-1,), "vflip": (-2,), "hvflip": (-2, -1)}


@dataclass(frozen=True)
class BatchPrediction:
    """What the ensemble says about a batch of windows.

    ``clf``: (b,) float64, each window's classification probability (mean
    over models and flips), or None when the models have no classification
    head. ``centres``: ``(window, probability, spread)`` for each window that
    passed the gate, both ``(centre_height, centre_width)`` uint8 (the
    module docstring's scales).
    """

    clf: np.ndarray | None
    centres: list[tuple[Window, np.ndarray, np.ndarray]]


class Ensemble:
    """Models x flips on one device: the gated, flip-averaged probability of a batch of windows."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        tta: Sequence[str],
        clf_threshold: float | None,
        device: torch.device,
        amp: bool,
        channels_last: bool,
        weights: Sequence[float] | None = None,
    ):
        if not models:
            raise InputError(None, "no models to predict with")
        models, self.weights = _weighted(models, weights)
        unknown = [name for name in tta if name not in FLIPS]
        if not tta or unknown or len(set(tta)) != len(tta):
            raise InputError(None, f"tta: expected distinct flips among {', '.join(FLIPS)}, got {list(tta)}")
        if clf_threshold is not None:
            if not 0 <= clf_threshold <= 1:
                raise InputError(None, f"clf_threshold must be in [0, 1] or None, got {clf_threshold}")
            headless = [i for i, m in enumerate(models) if not getattr(m, "has_classifier", True)]
            if headless:
                raise InputError(None, f"clf_threshold is set but model {headless[0]} has no classification head")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.models = [model.eval().to(device, memory_format=self.memory_format) for model in models]
        self.flips = [FLIPS[name] for name in tta]
        self.clf_threshold = clf_threshold
        self.device = device
        self.autocast = autocast(device, amp)

    @torch.inference_mode()
    def predict_centres(self, inputs: np.ndarray, grid: CentreGrid, windows: list[Window]) -> BatchPrediction:
        """Return the classification probability of each of ``windows`` and the kept centres of those that pass.

        ``inputs``: the windows scaled for the models, (b, 3, S, S) float32.
        The classification heads run whenever the models have them (also
        without a gate), so that the gate can be swept afterwards.
        """
        images = torch.from_numpy(inputs)
        if self.device.type == "cuda":
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with self.autocast:
            clf, moments = self._moments(images)
        passed = (
            np.ones(len(windows), dtype=bool)
            if clf is None or self.clf_threshold is None
            else clf >= self.clf_threshold
        )
        if moments is None:
            return BatchPrediction(clf, [])
        mean, spread = moments
        if mean.shape[-1] != grid.tile_size:
            size = (grid.tile_size, grid.tile_size)
            both = F.interpolate(torch.cat([mean, spread], dim=1), size=size, mode="bilinear", align_corners=False)
            mean, spread = both[:, :1], both[:, 1:]
        margin = grid.margin
        keep = slice(margin, margin + grid.keep)
        mean_u8, spread_u8 = (
            x[:, 0, keep, keep].clamp(0, 1).mul_(PROBABILITY_SCALE).round_().to(torch.uint8).cpu().numpy()
            for x in (mean, spread)
        )
        kept = [window for window, ok in zip(windows, passed.tolist(), strict=True) if ok]
        centres = [
            (w, p[: w.centre_height, : w.centre_width], u[: w.centre_height, : w.centre_width])
            for w, p, u in zip(kept, mean_u8, spread_u8, strict=True)
        ]
        return BatchPrediction(clf, centres)

    def _moments(self, images: torch.Tensor) -> tuple[np.ndarray | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """Return ``(clf, moments)`` for a batch of b windows.

        ``clf``: (b,) float64 on the CPU, the classification probability
        (mean over models and flips), None without classification heads.
        ``moments``: ``(mean, spread)``, each (p, 1, S, S) float32 for the p
        windows that pass the gate (the probability's mean over models and
        flips, and ``min(2 sigma, 1)`` of it), or None when none passed.
        """
        runs = [
            (model, dims, weight)
            for model, weight in zip(self.models, self.weights, strict=True)
            for dims in self.flips
        ]
        total_weight = sum(weight for _, _, weight in runs)
        classifies = all(getattr(model, "has_classifier", True) for model in self.models)
        clf_sum = torch.zeros(images.shape[0], device=images.device)
        moments = _Moments()
        if self.clf_threshold is None:  # each run's features are dropped as soon as it is segmented
            for model, dims, weight in runs:
                features = model.encode(_flip(images, dims))
                if classifies:
                    clf_sum += _weigh(torch.sigmoid(model.classify(features).float()).view(-1), weight)
                moments.add(self._segment(model, dims, features), weight)
            clf = (clf_sum / total_weight).double().cpu().numpy() if classifies else None
            return clf, moments.result()
        kept = []  # every run's features wait for the gate
        for model, dims, weight in runs:
            kept.append(model.encode(_flip(images, dims)))
            clf_sum += _weigh(torch.sigmoid(model.classify(kept[-1]).float()).view(-1), weight)
        clf = (clf_sum / total_weight).double().cpu().numpy()
        passed = torch.from_numpy(clf >= self.clf_threshold)
        if not passed.any():
            return clf, None
        if not passed.all():
            index = passed.nonzero().view(-1).to(images.device)
            kept = [_select(f, index) for f in kept]
        for (model, dims, weight), features in zip(runs, kept, strict=True):
            moments.add(self._segment(model, dims, features), weight)
        return clf, moments.result()

    @staticmethod
    def _segment(model: nn.Module, dims: tuple[int, ...], features) -> torch.Tensor:
        """Return the un-flipped sigmoid of ``model``'s segmentation logits, float32."""
        return _flip(torch.sigmoid(model.segment(features).float()), dims)


class _Moments:
    """Running (weighted) mean and spread of probability maps: :meth:`result` is ``(mean, min(2 sigma, 1))``."""

    def __init__(self) -> None:
        self.n = 0.0
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, p: torch.Tensor, weight: float = 1.0) -> None:
        self.n += weight
        wp = _weigh(p, weight)
        self.total = wp if self.total is None else self.total + wp
        self.squares = wp * p if self.squares is None else self.squares + wp * p

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.n
        variance = (self.squares / self.n - mean * mean).clamp_(min=0)
        return mean, variance.sqrt_().mul_(2).clamp_(max=1)


def _weighted(models: Sequence[nn.Module], weights: Sequence[float] | None) -> tuple[list[nn.Module], list[float]]:
    """Return the models of non-zero weight and their weights, scaled to mean 1 (equal weights: exactly 1.0 each).

    InputError when ``weights`` does not give one number >= 0 per model, not all 0.
    """
    if weights is None:
        return list(models), [1.0] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError(
            None, f"weights: expected one weight >= 0 per model ({len(models)} models), not all 0, got {weights}"
        )
    kept = [(model, w) for model, w in zip(models, weights, strict=True) if w > 0]
    mean = sum(w for _, w in kept) / len(kept)
    return [model for model, _ in kept], [w / mean for _, w in kept]


def _weigh(x: torch.Tensor, weight: float) -> torch.Tensor:
    """``x`` times ``weight``; ``x`` itself for weight 1 (so that unweighted sums stay bit for bit as they were)."""
    return x if weight == 1.0 else x * weight


def _select(features, index: torch.Tensor):
    """Return ``features`` (a tensor or nested lists/tuples of them, batch first) at batch ``index``."""
    if isinstance(features, torch.Tensor):
        return features.index_select(0, index)
    return type(features)(_select(f, index) for f in features)


def _flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.flip(dims) if dims else x
