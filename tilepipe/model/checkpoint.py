"""Self-describing checkpoints: the ``model`` settings, the state dict and free extras, plain types only."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.model.build import build_model, resolve_settings
from tilepipe.model.state_dicts import load_state_dict_checked, read_torch_file

FORMAT = "tilepipe.model.checkpoint/1"
_PLAIN_LEAVES = (type(None), bool, int, float, str, torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made of dicts, lists, tuples, tensors, numbers, str and None."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds plain types and tensors only")


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, settings: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s state dict with its ``model`` settings (completed with defaults) and ``extra`` to ``path``.

    ``extra`` (e.g. epoch, metrics, optimizer state) must hold plain types and
    tensors only (TypeError otherwise, before anything is written). The file
    appears atomically.
    """
    payload = {
        "format": FORMAT,
        "settings": resolve_settings(settings),
        "state_dict": model.state_dict(),
        "extra": {} if extra is None else extra,
    }
    _check_plain(payload["extra"], "extra")
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return the checkpoint at ``path`` as {"settings", "state_dict", "extra"}, tensors on ``map_location``.

    Read with ``weights_only=True``. Raises InputError naming ``path`` if it is
    not a readable tilepipe checkpoint or its settings are invalid.
    """
    payload = read_torch_file(path, map_location)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise InputError(path, f"not a tilepipe checkpoint (no format tag {FORMAT!r})")
    if not (isinstance(payload.get("settings"), dict) and isinstance(payload.get("state_dict"), dict)):
        raise InputError(path, "tilepipe checkpoint without a settings dict and a state dict")
    try:
        settings = resolve_settings(payload["settings"])
    except InputError as err:
        raise InputError(path, f"invalid stored settings: {err.problem}") from err
    return {"settings": settings, "state_dict": payload["state_dict"], "extra": payload.get("extra", {})}


def checkpoint_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Return the ``model`` settings stored in the checkpoint at ``path``, without building the network."""
    return read_checkpoint(path)["settings"]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Return the network saved at ``path``, rebuilt from its stored settings, on ``map_location``, in eval mode.

    Encoder weights are not fetched again (the state dict holds them) and
    torch's global RNG is left as it was. Raises InputError naming ``path``
    when the file is not a tilepipe checkpoint or its state dict does not fit
    its settings.
    """
    checkpoint = read_checkpoint(path, map_location)
    settings = {**checkpoint["settings"], "encoder_weights": None}
    with torch.random.fork_rng(devices=[]):
        model = build_model(settings)
    load_state_dict_checked(
        model, checkpoint["state_dict"], path, f"the {settings['encoder']} U-Net of its stored settings"
    )
    return model.to(map_location).eval()
