"""A full disk mid-ingest: the job fails with the OS error, leaves no partial store and keeps the previous one."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tilepipe.data.ingest import ingest_slide
from tilepipe.stores.slide import SlideStore

SMALL = {"chunk": 64, "min_level_size": 100, "assumed_mpp": 0.5, "progress": False, "threads": 2}


@pytest.fixture
def slide(tmp_path) -> Path:
    path = tmp_path / "slide.tiff"
    image = np.random.default_rng(0).integers(0, 255, (500, 600, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    return path


def fill_disk_after(monkeypatch, writes: int) -> None:
    """Every file write after the first ``writes`` fails with ENOSPC, as on a full disk."""
    original = Path.write_bytes
    count = {"n": 0}

    def write_bytes(self, data):
        count["n"] += 1
        if count["n"] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("writes", [0, 5, 40])
def test_a_full_disk_leaves_no_partial_store(tmp_path, slide, monkeypatch, writes):
    out = tmp_path / "slide.zarr"
    fill_disk_after(monkeypatch, writes)
    with pytest.raises(OSError) as raised:
        ingest_slide(slide, out, **SMALL)
    assert raised.value.errno == errno.ENOSPC
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.tiff"], "no temporary left"


def test_a_full_disk_keeps_the_previous_store(tmp_path, slide, monkeypatch):
    out = tmp_path / "slide.zarr"
    ingest_slide(slide, out, **SMALL)
    before = SlideStore(out).read_image(0, 0, 500, 600)
    fill_disk_after(monkeypatch, 10)
    with pytest.raises(OSError):
        ingest_slide(slide, out, **SMALL)
    monkeypatch.undo()
    assert np.array_equal(SlideStore(out).read_image(0, 0, 500, 600), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.tiff", "slide.zarr"]
