"""Killed jobs leave no temporary folder: SIGTERM removes the job's own, the next job removes a SIGKILL's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tilepipe import atomic

# A job that writes a directory artifact slowly, file by file, inside atomic_output.
SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tilepipe.atomic import atomic_output

    with atomic_output(sys.argv[1]) as tmp:
        tmp.mkdir()
        for i in range(10_000):
            (tmp / f"part{i}").write_text("x" * 1000)
            time.sleep(0.01)
    """
)

# ingest_slide of a slide big enough to take a few seconds on one thread.
INGEST = textwrap.dedent(
    """
    import sys
    from tilepipe.data.ingest import ingest_slide

    ingest_slide(sys.argv[1], sys.argv[2], chunk=256, min_level_size=256, assumed_mpp=0.5, threads=1, progress=False)
    """
)


def temporaries(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.tmp-*"))


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, text=True)


def wait_for_temporary(final: Path, process: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = temporaries(final)
        if found and any(found[0].iterdir()):
            return found[0]
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"no temporary of {final} appeared in {timeout} s")


def test_sigterm_removes_the_jobs_temporary(tmp_path):
    final = tmp_path / "store.zarr"
    process = start(SLOW_WRITER, str(final))
    wait_for_temporary(final, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert temporaries(final) == []
    assert not final.exists()


def test_sigterm_keeps_the_previous_artifact(tmp_path):
    final = tmp_path / "store.zarr"
    final.mkdir()
    (final / "old").write_text("kept")
    process = start(SLOW_WRITER, str(final))
    wait_for_temporary(final, process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert temporaries(final) == []
    assert (final / "old").read_text() == "kept"


def test_the_next_job_removes_what_sigkill_left(tmp_path):
    final = tmp_path / "store.zarr"
    process = start(SLOW_WRITER, str(final))
    left = wait_for_temporary(final, process)
    process.kill()
    process.wait(timeout=30)
    assert temporaries(final) == [left], "SIGKILL cannot be caught: the temporary stays until the next job"
    with atomic.atomic_output(final) as tmp:
        assert temporaries(final) == []
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert temporaries(final) == []


def test_live_and_foreign_temporaries(tmp_path):
    """A temporary of a live process on this host is kept (another writer); one of another host is stale."""
    final = tmp_path / "out.csv"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = final.with_name(f".{final.name}.tmp-{atomic._HOST}-{live.pid}")
        foreign = final.with_name(f".{final.name}.tmp-{atomic._HOST}x-{live.pid}")
        other_output = final.with_name(f".{final.name}x.tmp-{atomic._HOST}-1")
        for path in (alive, foreign, other_output):
            path.write_text("partial")
        assert atomic.remove_stale_temporaries(final) == [foreign]
        assert alive.exists() and other_output.exists()
    finally:
        live.kill()
        live.wait()
    assert atomic.remove_stale_temporaries(final) == [alive]


def test_sigterm_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic.atomic_output(tmp_path / "a") as tmp:
        assert signal.getsignal(signal.SIGTERM) is not before
        with atomic.atomic_output(tmp_path / "b") as inner:
            inner.write_text("b")
        assert signal.getsignal(signal.SIGTERM) is not before, "an inner output must not drop the outer's handler"
        tmp.write_text("a")
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.fixture(scope="module")
def slow_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    image = np.random.default_rng(0).integers(0, 255, (4096, 4096, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")
    return path


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_killed_ingest_then_rerun_leaves_no_temporary(tmp_path, slow_slide, kill):
    final = tmp_path / "slide.zarr"
    process = start(INGEST, str(slow_slide), str(final))
    wait_for_temporary(final, process)
    process.send_signal(kill)
    process.wait(timeout=60)
    if kill == signal.SIGTERM:
        assert temporaries(final) == []
    subprocess.run([sys.executable, "-c", INGEST, str(slow_slide), str(final)], check=True)
    assert temporaries(final) == []
    assert (final / "zarr.json").is_file()
    assert not os.path.exists(final.with_name(f".{final.name}.old"))
