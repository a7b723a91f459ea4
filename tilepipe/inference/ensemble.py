"""The fold ensemble with flip TTA: models x flips on one device, gated by the classification head.

Inputs are batches of windows scaled for the models, ``(b, 3, S, S)``
float32; outputs are the kept centres of the windows as uint8
``round(p * 255)`` (the probability stores' scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tilepipe.errors import InputError
from tilepipe.inference.windows import CentreGrid, Window
from tilepipe.model.device import autocast
from tilepipe.stores.probability import PROBABILITY_SCALE

__all__ = ["FLIPS", "Ensemble"]


# Flip name -> the tensor dims it reverses on (b, c, y, x); each flip is its own inverse.
FLIPS = {"none": (), "hflip": (-1,), "vflip": (-2,), "hvflip": (-2, -1)}


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
    ):
        if not models:
            raise InputError(None, "no models to predict with")
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
    def predict_centres(
        self, inputs: np.ndarray, grid: CentreGrid, windows: list[Window]
    ) -> list[tuple[Window, np.ndarray]]:
        """Return ``(window, centre)`` for each of ``windows`` that passes the classification gate.

        ``inputs``: the windows scaled for the models, (b, 3, S, S) float32.
        ``centre``: the window's kept centre, ``(centre_height,
        centre_width)`` uint8 ``round(p * 255)``.
        """
        images = torch.from_numpy(inputs)
        if self.device.type == "cuda":
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with self.autocast:
            probability, passed = self._probability(images)
        if probability is None:
            return []
        if probability.shape[-1] != grid.tile_size:
            size = (grid.tile_size, grid.tile_size)
            probability = F.interpolate(probability, size=size, mode="bilinear", align_corners=False)
        margin = grid.margin
        quantised = (
            probability[:, 0, margin : margin + grid.keep, margin : margin + grid.keep]
            .mul_(PROBABILITY_SCALE)
            .round_()
            .to(torch.uint8)
            .cpu()
            .numpy()
        )
        kept = [window for window, ok in zip(windows, passed.tolist(), strict=False) if ok]
        return [(w, centre[: w.centre_height, : w.centre_width]) for w, centre in zip(kept, quantised, strict=False)]

    def _probability(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Return ``(probability, passed)`` for a batch of b windows.

        ``passed``: (b,) bool on the CPU, the classification gate.
        ``probability``: (p, 1, S, S) float32, the mean over models and flips
        for the p windows that passed, or None when none did.
        """
        runs = [(model, dims) for model in self.models for dims in self.flips]
        if self.clf_threshold is None:
            passed = torch.ones(images.shape[0], dtype=torch.bool)
            total = sum(self._segment(model, dims, model.encode(_flip(images, dims))) for model, dims in runs)
            return total / len(runs), passed
        features = []
        clf = torch.zeros(images.shape[0], device=images.device)
        for model, dims in runs:
            features.append(model.encode(_flip(images, dims)))
            clf += torch.sigmoid(model.classify(features[-1]).float()).view(-1)
        passed = (clf / len(runs) >= self.clf_threshold).cpu()
        if not passed.any():
            return None, passed
        if not passed.all():
            index = passed.nonzero().view(-1).to(images.device)
            features = [_select(f, index) for f in features]
        total = sum(self._segment(model, dims, f) for (model, dims), f in zip(runs, features, strict=False))
        return total / len(runs), passed

    @staticmethod
    def _segment(model: nn.Module, dims: tuple[int, ...], features) -> torch.Tensor:
        """Return the un-flipped sigmoid of ``model``'s segmentation logits, float32."""
        return _flip(torch.sigmoid(model.segment(features).float()), dims)


def _select(features, index: torch.Tensor):
    """Return ``features`` (a tensor or nested lists/tuples of them, batch first) at batch ``index``."""
    if isinstance(features, torch.Tensor):
        return features.index_select(0, index)
    return type(features)(_select(f, index) for f in features)


def _flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.flip(dims) if dims else x
