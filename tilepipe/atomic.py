"""Atomic outputs: write to a temporary sibling, rename into place on success.

Temporaries are named ``.NAME.tmp-HOST-PID``. They never outlive their job:
an exception or SIGTERM (what SLURM sends at a time limit; it is turned
into ``SystemExit(143)`` while an output is open) removes them, and the
next ``atomic_output`` of the same path removes those a SIGKILL left, i.e.
those whose process is gone on this host, and those of other hosts (an
output has one writer at a time: Snakemake's lock on its outputs).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_HOST = socket.gethostname().replace("-", "_") or "host"
_TMP_INFIX = ".tmp-"
_open_outputs = 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_settled(path: Path, seconds: float = 10.0, quiet: float = 0.25) -> None:
    """Remove ``path`` while threads that were writing into it may still add files (e.g. zarr's I/O loop).

    Retries until the tree has stayed gone for ``quiet`` seconds, or raises
    the last error after ``seconds``.
    """
    deadline = time.monotonic() + seconds
    gone_since = None
    while True:
        try:
            _remove(path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            gone_since = None
        else:
            if not _present(path):
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since >= quiet or time.monotonic() > deadline:
                    return
        time.sleep(0.05)


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no glibc >= 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when the system or file system cannot (then nothing changed).
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _discard(path: Path, trash: Path) -> None:
    """Remove ``path`` by first renaming it to ``trash``, so a half-removed tree only ever lies at ``trash``."""
    if _present(path):
        _remove(trash)
        os.rename(path, trash)
    _remove(trash)


def _recover(final: Path, aside: Path, trash: Path) -> None:
    """Finish what a killed replacement left: put the old artifact back if nothing took its place."""
    _remove(trash)
    if _present(aside):
        if _present(final):
            _discard(aside, trash)
        else:
            os.rename(aside, final)


def temporary_path(final: Path) -> Path:
    """The temporary sibling this process writes ``final`` to (``.NAME.tmp-HOST-PID``)."""
    return final.with_name(f".{final.name}{_TMP_INFIX}{_HOST}-{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries of ``final`` left by killed processes; return the paths removed.

    A temporary is stale when its process is gone (same host) or it was
    written on another host; this process's own is left alone.
    """
    prefix = f".{final.name}{_TMP_INFIX}"
    removed = []
    if not final.parent.is_dir():
        return removed
    for candidate in final.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        host, _, pid = candidate.name[len(prefix) :].rpartition("-")
        if not pid.isdigit():
            continue
        if host == _HOST and (int(pid) == os.getpid() or _process_alive(int(pid))):
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While open, SIGTERM raises ``SystemExit(143)`` in the main thread, so temporaries are removed.

    Leaves a handler someone else installed alone, and does nothing outside the main thread.
    """
    global _open_outputs
    installed = False
    if threading.current_thread() is threading.main_thread():
        if _open_outputs == 0 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_on_sigterm)
        installed = signal.getsignal(signal.SIGTERM) is _raise_on_sigterm
        _open_outputs += installed
    try:
        yield
    finally:
        if installed:
            _open_outputs -= 1
            if _open_outputs == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success.

    Works for files and directories (zarr stores). The temporary path is in
    the same folder, so the rename is atomic on one file system. On any
    exception the temporary path is removed and ``final`` is left as it was.

    A file replaces a file in one rename. An existing directory (or any
    replacement of one kind by the other) is swapped with the new one in one
    step where Linux can (``renameat2``), so that a complete artifact, old or
    new, is at ``final`` at every moment, even if the process is killed; the
    old one is then removed. Elsewhere it is renamed aside (``.NAME.old``)
    before the new one is renamed in; a kill between the two renames leaves
    it there, and the next ``atomic_output(final)`` puts it back first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    aside = final.with_name(f".{final.name}.old")
    trash = final.with_name(f".{final.name}.trash")
    with _sigterm_raises():
        _recover(final, aside, trash)
        remove_stale_temporaries(final)
        _remove(tmp)
        try:
            yield tmp
        except BaseException:
            _remove_settled(tmp)
            raise
        try:
            _move_into_place(tmp, final, aside)
        except BaseException:
            _remove_settled(tmp)
            raise
        _discard(aside, trash)


def _move_into_place(tmp: Path, final: Path, aside: Path) -> None:
    """Move ``tmp`` to ``final``; an old artifact of a kind a rename cannot replace ends at ``aside``."""
    replaced_dir = final.is_dir() and not final.is_symlink()
    new_dir = tmp.is_dir() and not tmp.is_symlink()
    if not _present(final) or not (replaced_dir or new_dir):
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        os.rename(tmp, aside)
        return
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
