"""What a training job asks the scheduler for: host memory from measured figures, by network, batch and device.

Figures from ``benchmarks/bench_train_memory.py`` (docs/benchmarks.md): the
peak RSS of one fp32 Adam step on the CPU, fitted as ``base + per_sample *
batch`` at 160 and 320 px, of the recipe decoder (CBAM, hypercolumns, deep
supervision, classification head; 512 centre and 64 decoder channels) on
each encoder (:data:`TRAIN_STEP_MIB`), and of some smp architectures with
their default decoders (:data:`SMP_TRAIN_STEP_MIB`). The tables keep the
upper envelope of the two fits (the larger base, and the larger per-sample
cost scaled to 320 px by the input's area), so they bound every measured
point; smaller decoders (the demo's) need less. A network in neither table
takes :data:`UNMEASURED_FACTOR` times the largest figures of both: the request
is made at parse time, without torch, so its parameter count is unknown.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

__all__ = [
    "SMP_TRAIN_STEP_MIB",
    "TRAIN_STEP_MIB",
    "UNMEASURED_FACTOR",
    "bound_heap_growth",
    "step_figures",
    "training_memory_mb",
]

# unet_1st_place with the recipe decoder: encoder -> (base MiB, MiB per sample at REFERENCE_SIZE px), measured 2026-12-02.
TRAIN_STEP_MIB: dict[str, tuple[int, int]] = {
    "resnet18": (842, 1128),
    "resnet34": (863, 1096),
    "se_resnext50_32x4d": (2711, 1269),
    "se_resnext101_32x4d": (3065, 1408),
    "timm/convnext_tiny": (1249, 919),
}
# smp architectures with their default decoders and smp's classification head: (architecture, encoder) -> as above.
SMP_TRAIN_STEP_MIB: dict[tuple[str, str], tuple[int, int]] = {
    ("UnetPlusPlus", "timm/regnety_016"): (841, 440),
    ("UnetPlusPlus", "se_resnext50_32x4d"): (1490, 902),
    ("Unet", "timm/efficientnet_b0"): (860, 288),
    ("DeepLabV3Plus", "timm/convnext_tiny"): (1281, 339),
}
# An unmeasured network asks for this many times the largest measured base and per-sample figures
# (every measured smp network needs less than half of them; a timm backbone of ~200 M parameters
# adds ~3 GiB of weights, gradients and Adam moments to the largest base, within the factor).
UNMEASURED_FACTOR = 2
REFERENCE_SIZE = 320
# A forked DataLoader worker: its decoded chunks (64 MB cache), tiles and
# augmentation buffers, and the parent's pages it touches. The CI recipe job
# (batch 2 at 64 px, 2 workers) peaked at 6.6-7.0 GB of RSS summed over its
# processes (shared pages counted in each): ~2 GB per worker bounds it.
WORKER_MIB = 2000
# Host side of a CUDA job: the CUDA context and kernels; activations live on the GPU.
CUDA_HOST_MIB = 3000
MARGIN = 1.25
MINIMUM_MB = 2000


def training_memory_mb(model: dict[str, Any], train: dict[str, Any]) -> int:
    """Host memory in MB (a multiple of 100) for one training job with the config's ``model`` and ``train`` sections.

    On the CPU (``train.device`` ``cpu``, or ``auto``: the submit host cannot
    know what a node has) the batch's activations count, scaled by the input
    area; on ``cuda`` they live on the GPU and only the CUDA host side does.
    Each of ``train.num_workers`` DataLoader workers adds :data:`WORKER_MIB`.
    Networks not measured (see :func:`step_figures`) take :data:`UNMEASURED_FACTOR`
    times the largest measured figures; the total has a 25 % margin and a
    floor of :data:`MINIMUM_MB`.
    """
    base, per_sample = step_figures(model)
    if str(train["device"]).startswith("cuda"):
        need = base + CUDA_HOST_MIB
    else:
        need = base + per_sample * train["batch_size"] * (train["input_size"] / REFERENCE_SIZE) ** 2
    need += WORKER_MIB * train["num_workers"]
    return max(MINIMUM_MB, 100 * math.ceil(MARGIN * need / 100))


def step_figures(model: dict[str, Any]) -> tuple[int, int]:
    """(base MiB, MiB per sample at REFERENCE_SIZE px) of one CPU training step of the ``model`` section's network.

    Measured figures where the table has the network (the 1st-place U-Net by
    encoder, smp architectures by architecture and encoder), else
    :data:`UNMEASURED_FACTOR` times the largest base and per-sample figures
    of both tables.
    """
    architecture = model.get("architecture", "unet_1st_place")
    if architecture == "unet_1st_place":
        measured = TRAIN_STEP_MIB.get(model["encoder"])
    else:
        measured = SMP_TRAIN_STEP_MIB.get((architecture, model["encoder"]))
    if measured is not None:
        return measured
    figures = [*TRAIN_STEP_MIB.values(), *SMP_TRAIN_STEP_MIB.values()]
    return (
        UNMEASURED_FACTOR * max(base for base, _ in figures),
        UNMEASURED_FACTOR * max(per_sample for _, per_sample in figures),
    )


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024


def bound_heap_growth() -> bool:
    """Make glibc map blocks of at least 128 KiB directly and unmap them when freed; return whether it could.

    Prediction on the CPU allocates batches of varying size; glibc's default
    (a dynamic threshold that grows to 32 MiB) keeps them on the heap, whose
    peak kept growing with the windows predicted: +2.1 GiB above the model
    after 359 windows at 256 px, +1.2 GiB with this setting (the same as
    ``MALLOC_MMAP_THRESHOLD_=131072``; benchmarks/bench_scale.py,
    docs/benchmarks.md). No effect (False) where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
