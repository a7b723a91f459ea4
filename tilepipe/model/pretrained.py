"""Fold models that come from a folder instead of training: tilepipe checkpoints or the 1st-place team's files.

``pretrained.stage1: DIR`` in the config makes each stage-1 fold model the
file :func:`pretrained_file` finds in ``DIR`` (``fold{k}/model.pt``, a
tilepipe checkpoint, or ``model_seed0_fold{k}_bestscore.pth``, a state dict
of their ``UNET_SERESNEXT101``), written as a tilepipe checkpoint by
:func:`import_pretrained`; pseudo-labels, stage 2 and the submission follow.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tilepipe.atomic import atomic_output
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tilepipe.errors import InputError
from tilepipe.model.checkpoint import DIGEST_KEY, FORMAT, checkpoint_from_payload, save_checkpoint
from tilepipe.model.first_place import FIRST_PLACE_SETTINGS, first_place_network
from tilepipe.model.state_dicts import read_torch_file, weights_digest

__all__ = ["FIRST_PLACE_GEOMETRY", "import_pretrained", "pretrained_file"]

# How their inference fed the network: 1024 px windows of the full-resolution
# slide (0.5 um/px), INTER_AREA to 320 px, ImageNet normalisation.
FIRST_PLACE_GEOMETRY: dict[str, Any] = {
    "tile_size": 1024,
    "input_size": 320,
    "read_level": 0,
    "mpp": 0.5,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


def pretrained_file(folder: str | os.PathLike, fold: int) -> Path:
    """Return the model file of ``fold`` in ``folder``: ``fold{k}/model.pt`` or ``model_seed0_fold{k}_bestscore.pth``.

    Raises InputError naming the folder when it holds neither (or both).
    """
    folder = Path(folder)
    candidates = [folder / f"fold{fold}" / "model.pt", folder / f"model_seed0_fold{fold}_bestscore.pth"]
    found = [path for path in candidates if path.is_file()]
    if len(found) != 1:
        names = " or ".join(str(path.relative_to(folder)) for path in candidates)
        problem = "holds both" if found else "has no"
        raise InputError(folder, f"pretrained.stage1 {problem} {names} for fold {fold}")
    return found[0]


def import_pretrained(source: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """Write the fold model at ``source`` as a tilepipe checkpoint at ``out_path``; return what it was.

    A tilepipe checkpoint is checked (format, settings and weights digest)
    and copied as it is, except that one written before checkpoints stored
    their digest gets it added; any other file must be a 1st-place state
    dict, imported exactly (:func:`tilepipe.model.first_place.import_first_place`)
    and stored, with its digest, with :data:`FIRST_PLACE_GEOMETRY`. Returns
    ``{"source", "kind"}`` with kind ``"tilepipe"`` or ``"first_place"``.
    Raises InputError naming ``source``.
    """
    payload = read_torch_file(source)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        checkpoint_from_payload(payload, source)
        with atomic_output(out_path) as tmp:
            if payload.get(DIGEST_KEY) is not None:
                shutil.copyfile(source, tmp)
            else:
                torch.save({**payload, DIGEST_KEY: weights_digest(payload["state_dict"])}, tmp)
        return {"source": os.fspath(source), "kind": "tilepipe"}
    model = first_place_network(payload, source)
    extra = {"source": os.fspath(source), "imported_from": "1st-place UNET_SERESNEXT101 state dict"}
    save_checkpoint(out_path, model, FIRST_PLACE_SETTINGS, extra=extra, geometry=FIRST_PLACE_GEOMETRY)
    return {"source": os.fspath(source), "kind": "first_place"}
