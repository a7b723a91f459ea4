"""Reading state dicts from files, their digest, and loading them strictly, with errors that name the file."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tilepipe.errors import InputError

_SHOWN_KEYS = 5


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Return the object stored in a ``torch.save`` file, read with ``weights_only=True``.

    Raises InputError naming ``path`` when the file is missing, unreadable or
    holds anything but plain types and tensors.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise InputError(path, f"cannot read as a torch weights file ({type(err).__name__}: {err})") from err


def weights_digest(state_dict: Mapping[str, Any]) -> str:
    """Return ``"sha256:<64 hex digits>"``, the SHA-256 of ``state_dict``'s names, dtypes, shapes and values.

    Hashed in key order, for each entry: the line ``json.dumps([name, str(dtype),
    list(shape)]) + "\n"`` (UTF-8, e.g. ``["conv.weight", "torch.float32",
    [8, 3, 3, 3]]``), then the tensor's elements in C order, as bytes on the CPU
    (little-endian). The same weights give the same digest on any device;
    changing one byte of one tensor changes it. Raises TypeError for a value
    that is not a tensor.
    """
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} is a {type(tensor).__name__}, not a tensor")
        digest.update((json.dumps([name, str(tensor.dtype), list(tensor.shape)]) + "\n").encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def _first(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def state_dict_mismatch(module: nn.Module, state_dict: Any) -> str | None:
    """Return why ``state_dict`` cannot be loaded strictly into ``module`` (first few bad keys), or None if it can."""
    if not isinstance(state_dict, dict):
        return f"expected a state dict (a dict of tensors), found {type(state_dict).__name__}"
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        if isinstance(value, torch.Tensor)
        else f"{key} ({type(value).__name__}, not a tensor)"
        for key, value in state_dict.items()
        if key in expected and not (isinstance(value, torch.Tensor) and value.shape == expected[key].shape)
    ]
    problems = [
        f"{label}: {_first(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape))
        if keys
    ]
    return "; ".join(problems) if problems else None


def load_state_dict_checked(module: nn.Module, state_dict: Any, source: str | os.PathLike, what: str) -> None:
    """Load ``state_dict`` into ``module`` strictly; on a mismatch raise InputError naming ``source``.

    ``what`` says what the state dict should have matched, e.g. "the weights of resnet34".
    """
    problem = state_dict_mismatch(module, state_dict)
    if problem is not None:
        raise InputError(source, f"does not fit {what}: {problem}")
    module.load_state_dict(state_dict, strict=True)
