"""GPU slots on one machine: each running GPU job claims its own device with a file lock.

With ``snakemake --resources gpu=N`` up to N GPU jobs (training, prediction)
run at once on one machine, and without this each of them would use cuda:0.
A job calls :func:`claim_gpu` at its start, before torch initialises CUDA:

* It takes the first free slot among the machine's devices: one lock file
  per physical device, ``<lock_dir>/gpu<device>.lock``, held with
  ``fcntl.flock`` on a descriptor kept open for the life of the process. The
  kernel drops the lock when the process ends however it ends (normal exit,
  exception, SIGKILL), so a crashed job never leaves a stale slot. Lock files
  are never deleted (deleting a lock file lets two processes hold "the" lock).
* It sets ``CUDA_VISIBLE_DEVICES`` to that one device, so the job's
  ``cuda`` / ``cuda:0`` is the slot's GPU.
* When every slot is busy (more GPU jobs at once than GPUs: ``gpu=N`` larger
  than the machine has) it polls until a slot frees, and after ``timeout``
  seconds raises :class:`GpuSlotsBusy` naming the lock directory, rather than
  share a device silently.

The devices are the entries of ``CUDA_VISIBLE_DEVICES`` when the user set it
(``"2,3"``: the slots are devices 2 and 3), else ``0 .. n-1`` for the n GPUs
:func:`count_gpus` finds without initialising CUDA (``nvidia-smi -L``, else
``/proc/driver/nvidia/gpus``). Nothing changes in a SLURM job (``SLURM_JOB_ID``
set: SLURM already gave the job its GPUs in ``CUDA_VISIBLE_DEVICES``) or on a
machine without GPUs.

Torch-free: importing torch here would be too late to choose the device.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"
DEFAULT_LOCK_DIR = ".snakemake/gpu_slots"
# Long enough for a finishing job's process (and its DataLoader workers, which
# share the lock) to exit; short enough that `gpu=N` larger than the machine
# fails within minutes instead of queueing unseen.
DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL = 1.0
PROC_GPUS = "/proc/driver/nvidia/gpus"

Source = Literal["slot", "slurm", "none"]

# The claim this process holds per lock directory, for calls with os.environ:
# a second call returns it instead of narrowing CUDA_VISIBLE_DEVICES again.
_HELD: dict[Path, GpuClaim] = {}


class GpuSlotsBusy(TimeoutError):
    """Every GPU slot stayed busy for the whole timeout; the message names the lock directory."""


@dataclass(eq=False)
class GpuClaim:
    """The GPU a job uses and, for ``source == "slot"``, the lock that reserves it.

    ``device``: the physical device id as ``CUDA_VISIBLE_DEVICES`` names it
    (``"2"``), or None when there is no GPU (``"none"``) or SLURM set none.
    ``source``: ``"slot"`` (claimed here, lock held), ``"slurm"`` (SLURM's
    choice, untouched) or ``"none"`` (no GPU, untouched). ``lock_path``: the
    held lock file, for ``"slot"`` only. The lock lasts until :meth:`release`
    or the end of the process: keep the object (or just let the process run).
    """

    device: str | None
    source: Source
    lock_path: Path | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        """True while this claim holds its slot's lock."""
        return self._fd is not None

    def describe(self) -> dict[str, str | None]:
        """Return ``{"device": ..., "source": ...}``, plain strings (device may be None), for logs and records."""
        return {"device": self.device, "source": self.source}

    def release(self) -> None:
        """Free the slot now (closing the lock's descriptor); a no-op for other sources or a second call.

        ``CUDA_VISIBLE_DEVICES`` keeps its value: the process still sees only
        this device, it just no longer reserves it.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        for key, claim in list(_HELD.items()):
            if claim is self:
                del _HELD[key]

    def __enter__(self) -> GpuClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def count_gpus(*, nvidia_smi: str = "nvidia-smi", proc_dir: str | os.PathLike = PROC_GPUS, timeout: float = 30) -> int:
    """Return the number of NVIDIA GPUs on this machine, without initialising CUDA (0 when none or no driver).

    Counts the ``GPU <i>: ...`` lines of ``nvidia-smi -L`` (NVML, as the
    process's container sees them; MIG lines are not counted); when
    nvidia-smi is missing, fails or hangs past ``timeout`` seconds, counts the
    entries of ``proc_dir`` (one per GPU the kernel driver knows).
    """
    try:
        done = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0:
        return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))
    try:
        return sum(1 for _ in Path(proc_dir).iterdir())
    except OSError:
        return 0


def visible_devices(value: str) -> list[str]:
    """Return the device ids a ``CUDA_VISIBLE_DEVICES`` value lists, in order, without duplicates.

    Entries are indices (``"2"``) or UUIDs (``"GPU-..."``, ``"MIG-..."``). As
    in CUDA, the list ends at the first empty or negative entry (``""`` and
    ``"-1"`` hide every GPU: an empty list).
    """
    devices: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        if entry not in devices:
            devices.append(entry)
    return devices


def lock_file(lock_dir: str | os.PathLike, device: str) -> Path:
    """Return the lock file of physical device ``device`` in ``lock_dir``: ``gpu<device>.lock``."""
    return Path(lock_dir) / f"gpu{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.lock"


def claim_gpu(
    lock_dir: str | os.PathLike = DEFAULT_LOCK_DIR,
    *,
    environ: MutableMapping[str, str] | None = None,
    devices: Sequence[str] | None = None,
    gpu_count: Callable[[], int] = count_gpus,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = DEFAULT_POLL,
) -> GpuClaim:
    """Claim a GPU slot for this process and point ``CUDA_VISIBLE_DEVICES`` at it; return the claim (never None).

    Call it once, at the start of a GPU job and before torch initialises CUDA
    (best: before ``import torch``). ``environ`` is the environment to read
    and set (default ``os.environ``). In order:

    * ``SLURM_JOB_ID`` in ``environ``: returns ``source="slurm"`` with the
      device SLURM set (or None); nothing is locked or changed.
    * The devices: ``devices`` when given, else those ``CUDA_VISIBLE_DEVICES``
      lists when it is set, else ``"0" .. "n-1"`` for ``n = gpu_count()``.
      None: returns ``source="none"``, device None; nothing changes.
    * Otherwise locks the first free device's file in ``lock_dir`` (created
      if needed), sets ``environ["CUDA_VISIBLE_DEVICES"]`` to it and returns
      ``source="slot"``. All busy: polls every ``poll`` seconds and raises
      :class:`GpuSlotsBusy` after ``timeout`` seconds.

    With ``os.environ`` a second call in the same process returns the claim
    it already holds for ``lock_dir``. Raises RuntimeError when torch has
    already initialised CUDA in this process (too late to choose a device).
    """
    real = environ is None or environ is os.environ
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        return GpuClaim(env.get(VISIBLE), "slurm")
    key = Path(os.path.abspath(lock_dir))
    if real and key in _HELD and _HELD[key].held:
        return _HELD[key]
    if devices is not None:
        candidates = list(dict.fromkeys(str(d) for d in devices))
    elif VISIBLE in env:
        candidates = visible_devices(env[VISIBLE])
    else:
        candidates = [str(i) for i in range(gpu_count())]
    if not candidates:
        return GpuClaim(None, "none")
    if real:
        _refuse_after_cuda_init()

    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        for device in candidates:
            path = lock_file(lock_dir, device)
            fd = _try_lock(path)
            if fd is not None:
                env[VISIBLE] = device
                claim = GpuClaim(device, "slot", path, fd)
                if real:
                    _HELD[key] = claim
                log.info("GPU slot: device %s (%s)", device, path)
                return claim
        now = time.monotonic()
        if now >= deadline:
            raise GpuSlotsBusy(_busy_message(lock_dir, candidates, timeout))
        if not waiting:
            log.warning("all %d GPU slots in %s are busy; waiting up to %g s", len(candidates), lock_dir, timeout)
            waiting = True
        time.sleep(max(0.0, min(poll, deadline - now)))


def _try_lock(path: Path) -> int | None:
    """Return an open descriptor holding an exclusive flock on ``path``, or None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for the busy message and for a person looking at the directory.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _busy_message(lock_dir: str | os.PathLike, devices: list[str], timeout: float) -> str:
    holders = []
    for device in devices:
        with contextlib.suppress(OSError):
            pid = lock_file(lock_dir, device).read_text().strip()
            holders.append(f"device {device}: pid {pid or '?'}")
    return (
        f"{os.fspath(lock_dir)}: all {len(devices)} GPU slots (devices {','.join(devices)}) stayed busy for "
        f"{timeout:g} s ({'; '.join(holders)}). More GPU jobs run at once than this machine has GPUs: "
        f"run Snakemake with --resources gpu={len(devices)} or fewer."
    )


def _refuse_after_cuda_init() -> None:
    """Raise RuntimeError when torch is imported and has initialised CUDA (checked without importing torch)."""
    torch = sys.modules.get("torch")
    initialised = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    if callable(initialised) and initialised():
        raise RuntimeError(
            "claim_gpu: torch has already initialised CUDA in this process, so CUDA_VISIBLE_DEVICES "
            "can no longer choose the device; claim the GPU before importing torch"
        )
