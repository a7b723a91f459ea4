"""Where a model runs: the device chosen at run time, and the autocast precision on it."""

from __future__ import annotations

import contextlib

import torch

from tilepipe.errors import InputError

__all__ = ["autocast", "select_device"]


def select_device(name: str | torch.device, setting: str = "device") -> torch.device:
    """Return the device ``name`` names: ``"auto"`` is CUDA when available, else the CPU.

    Raises InputError naming the config key ``setting`` when CUDA is asked
    for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"{setting}: cuda requested but no CUDA device is available")
    return device


def autocast(device: torch.device, amp: bool, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """Return the mixed-precision context of ``device``: fp16 autocast on CUDA when ``amp``,
    bf16 autocast on the CPU when ``cpu_bf16``, else a context that changes nothing."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
