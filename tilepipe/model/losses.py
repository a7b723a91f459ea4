"""Losses of the 1st-place recipe: BCE + Lovasz hinge, deep supervision on non-empty masks, classification BCE."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tilepipe.errors import InputError

DEFAULT_LOSS_WEIGHTS = {"bce": 1.0, "lovasz": 1.0, "deep": 0.1, "clf": 1.0}


def _jaccard_gradient(labels_sorted: torch.Tensor) -> torch.Tensor:
    """Per row of 0/1 labels sorted by decreasing error: the increments of the Jaccard loss along the order."""
    positives = labels_sorted.sum(dim=1, keepdim=True)
    intersection = positives - labels_sorted.cumsum(dim=1)
    union = positives + (1 - labels_sorted).cumsum(dim=1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Return the Lovasz hinge loss (Berman et al. 2018) of binary ``logits`` against 0/1 ``labels`` (a scalar).

    Both (b, h, w) or (b, 1, h, w). ``per_image``: the mean over images of
    each image's loss; otherwise one loss over all pixels of the batch. As in
    the reference, an image without foreground costs relu(1 + its largest
    logit). Computed in float32.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    rows = logits.shape[0] if per_image else 1
    logits = logits.reshape(rows, -1).float()
    labels = labels.reshape(rows, -1).float()
    errors = 1 - logits * (2 * labels - 1)
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    gradient = _jaccard_gradient(torch.gather(labels, 1, order))
    return (F.relu(errors_sorted) * gradient).sum(dim=1).mean()


class SegmentationLoss(nn.Module):
    """The recipe's training loss on the model's output dict.

    total = bce * BCE(logits) + lovasz * Lovasz(logits)
          + deep * sum over deep heads of [bce * BCE + lovasz * Lovasz], on images with a non-empty mask only
          + clf * BCE(clf logits, tile has foreground)
    with ``weights`` (missing keys take DEFAULT_LOSS_WEIGHTS). Heads missing
    from the outputs are skipped.
    """

    def __init__(self, weights: dict[str, float] | None = None):
        super().__init__()
        weights = {} if weights is None else weights
        unknown = [key for key in weights if key not in DEFAULT_LOSS_WEIGHTS]
        if unknown:
            known = ", ".join(DEFAULT_LOSS_WEIGHTS)
            raise InputError(None, f"loss weights: unknown key {unknown[0]!r}; known: {known}")
        for key, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(None, f"loss weights: {key} must be a number >= 0, got {value!r}")
        self.weights = {**DEFAULT_LOSS_WEIGHTS, **weights}

    def _mask_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (BCE, per-image Lovasz hinge) of (b, 1, h, w) logits against 0/1 masks of that shape."""
        bce = F.binary_cross_entropy_with_logits(logits.float(), masks.float())
        return bce, lovasz_hinge(logits, masks, per_image=True)

    def _weighted_mask_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        bce, lovasz = self._mask_loss(logits, masks)
        return self.weights["bce"] * bce + self.weights["lovasz"] * lovasz

    def forward(
        self,
        outputs: dict[str, Any],
        masks: torch.Tensor,
        clf_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (total loss, parts) for the model's ``outputs`` and 0/1 ``masks`` (b, 1, h, w).

        ``clf_target`` (b,) or (b, 1) in [0, 1]; None = whether each mask is
        non-empty. ``parts`` holds the terms as floats, for logging, such that
        total = sum of weights[k] * parts[k]: "bce", "lovasz" (main logits),
        "deep" (sum over the deep heads of bce * BCE + lovasz * Lovasz; 0.0
        when every mask is empty), "clf", and "total" itself.
        """
        logits = outputs["logits"]
        if masks.shape != logits.shape:
            raise ValueError(f"masks {tuple(masks.shape)} do not match logits {tuple(logits.shape)}")
        weights = self.weights
        non_empty = masks.flatten(1).amax(dim=1) > 0
        bce, lovasz = self._mask_loss(logits, masks)
        parts = {"bce": bce, "lovasz": lovasz}
        total = weights["bce"] * bce + weights["lovasz"] * lovasz
        if "deep" in outputs:
            if non_empty.any():
                deep = sum(self._weighted_mask_loss(head[non_empty], masks[non_empty]) for head in outputs["deep"])
            else:
                deep = sum(head.sum() for head in outputs["deep"]) * 0.0  # zero, every head still in the graph
            parts["deep"] = deep
            total = total + weights["deep"] * deep
        if "clf" in outputs:
            clf_logits = outputs["clf"].reshape(-1).float()
            target = non_empty.float() if clf_target is None else clf_target.reshape(-1).float()
            parts["clf"] = F.binary_cross_entropy_with_logits(clf_logits, target)
            total = total + weights["clf"] * parts["clf"]
        parts["total"] = total
        values = torch.stack([part.detach().float() for part in parts.values()]).tolist()
        return total, dict(zip(parts, values, strict=False))
