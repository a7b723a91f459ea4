"""Decompression bombs and single-strip slides: read in bounded memory, or refused before anything is allocated."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from tests.measure import peak_bytes
from tilepipe.data.ingest import ingest_slide
from tilepipe.errors import InputError
from tilepipe.io import tiff
from tilepipe.io.tiff import SlideTiff
from tilepipe.stores.slide import SlideStore

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 1500, 1100  # one strip of these decodes to 4.7 MiB, over SMALL_BUDGET
SMALL_BUDGET = 2**20
SMALL = {"chunk": 64, "min_level_size": 100, "assumed_mpp": 0.5, "progress": False, "threads": 2}
RGB = {"photometric": "rgb"}


@pytest.fixture
def small_budget(monkeypatch):
    """Lower the most bytes a strip may decode to at once, so that test-sized strips are streamed or refused."""
    monkeypatch.setattr(tiff, "SEGMENT_BUDGET", SMALL_BUDGET)


def random_rgb(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 image of noise over smooth ramps (so the predictor matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([y * 255 // height, x * 255 // width, (x + y) % 256], axis=-1)
    return (ramps + rng.integers(0, 64, (height, width, 3))).astype(np.uint8)


def write_strips(path: Path, planar: str = "contig", rowsperstrip: int = HEIGHT, **kwargs) -> Path:
    """Write :func:`random_rgb` to ``path`` in strips of ``rowsperstrip`` rows (one strip by default); return it.

    ``planar`` is "contig" (one page of RGB pixels), "separate" (one page of
    three planes) or "pages" (three one-channel pages).
    """
    pixels = random_rgb()
    if planar == "contig":
        tifffile.imwrite(path, pixels, rowsperstrip=rowsperstrip, **RGB, **kwargs)
        return path
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    if planar == "separate":
        tifffile.imwrite(path, planes, planarconfig="separate", rowsperstrip=rowsperstrip, **RGB, **kwargs)
    else:
        tifffile.imwrite(path, planes[None, None], photometric="minisblack", rowsperstrip=rowsperstrip, **kwargs)
    return path


def tifffile_cyx(path: Path) -> np.ndarray:
    """The image as tifffile decodes it, ``(3, y, x)``."""
    pixels = tifffile.imread(path).squeeze()
    return pixels if pixels.shape[0] == 3 else pixels.transpose(2, 0, 1)


def read_bands(path: Path, rows: int, pool=None) -> np.ndarray:
    """All bands of ``path`` joined, ``(3, y, x)``; asserts the strips are streamed."""
    with SlideTiff(path) as slide:
        assert slide.streamed and "streamed strips" in slide.layout
        bands = list(slide.bands(rows, pool))
    assert all(band.shape[1] == rows for band in bands[:-1])
    return np.concatenate(bands, axis=1)


def patch_tag(path: Path, name: str, value: int) -> None:
    """Overwrite the one value of tag ``name`` of the first page of a little-endian TIFF in place."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[name]
        assert tag.count == 1
        offset, fmt = tag.valueoffset, {3: "<H", 4: "<I", 16: "<Q"}[int(tag.dtype)]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))


# Strips that stream: deflate (with or without the horizontal predictor) and uncompressed.


@pytest.mark.parametrize(
    ("compression", "predictor", "planar"),
    [
        ("zlib", False, "contig"),
        ("zlib", True, "contig"),
        ("zlib", False, "separate"),
        ("zlib", True, "separate"),
        ("zlib", True, "pages"),
        (32946, True, "contig"),  # the old deflate code
    ],
)
def test_single_deflate_strip_streams_the_pixels_tifffile_decodes(
    tmp_path, small_budget, compression, predictor, planar
):
    path = write_strips(tmp_path / "s.tif", planar, compression=compression, predictor=predictor)
    np.testing.assert_array_equal(read_bands(path, 64), tifffile_cyx(path))


@pytest.mark.parametrize("planar", ["contig", "separate", "pages"])
def test_streamed_strips_cross_strip_and_band_edges_in_any_pool(tmp_path, small_budget, planar):
    path = write_strips(tmp_path / "s.tif", planar, rowsperstrip=700, compression="zlib", predictor=True)
    expected = tifffile_cyx(path)
    np.testing.assert_array_equal(read_bands(path, 96), expected)
    with ThreadPoolExecutor(2) as pool:
        np.testing.assert_array_equal(read_bands(path, 96, pool), expected)


@pytest.mark.parametrize("predictor", [False, True])
def test_planes_read_in_a_pool_do_not_race_on_the_file_position(tmp_path, small_budget, monkeypatch, predictor):
    """A seek that lets another thread run before its read: without a file lock the planes read each other's bytes."""
    path = write_strips(tmp_path / "s.tif", "separate", rowsperstrip=700, compression="zlib", predictor=predictor)
    expected = tifffile_cyx(path)
    seek = tifffile.FileHandle.seek

    def slow_seek(self, offset, whence=0):
        position = seek(self, offset, whence)
        time.sleep(0.0005)
        return position

    monkeypatch.setattr(tifffile.FileHandle, "seek", slow_seek)
    with ThreadPoolExecutor(3) as pool:
        np.testing.assert_array_equal(read_bands(path, 96, pool), expected)


def test_scattered_uncompressed_strips_are_streamed_by_offset(tmp_path, small_budget):
    path = write_strips(tmp_path / "s.tif", rowsperstrip=600)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
        values_at = page.tags["StripOffsets"].valueoffset  # three LONG offsets, stored apart from the IFD
    data = bytearray(path.read_bytes())
    moved = len(data)
    data += data[offset : offset + count]  # strip 0 again at the end, so the strips are no longer one run
    data[values_at : values_at + 4] = struct.pack("<I", moved)
    path.write_bytes(bytes(data))

    np.testing.assert_array_equal(read_bands(path, 64), random_rgb().transpose(2, 0, 1))


@pytest.mark.parametrize("threads", [2, 3])
def test_ingest_of_a_streamed_strip_writes_the_store_a_tiled_copy_writes(tmp_path, small_budget, threads):
    strip = write_strips(tmp_path / "strip.tif", "separate", compression="zlib", predictor=True)
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, random_rgb(), tile=(256, 256), compression="zlib", **RGB)
    ingest_slide(strip, tmp_path / "strip.zarr", **{**SMALL, "threads": threads})
    ingest_slide(tiled, tmp_path / "tiled.zarr", **SMALL)

    streamed, reference = SlideStore(tmp_path / "strip.zarr"), SlideStore(tmp_path / "tiled.zarr")
    np.testing.assert_array_equal(streamed.levels[0][:], tifffile_cyx(strip))
    assert len(streamed.levels) == len(reference.levels) == 5
    for ours, theirs in zip(streamed.levels, reference.levels, strict=True):
        np.testing.assert_array_equal(ours[:], theirs[:])


# The bomb: ~1 MB on disk, 1.2 GB decoded, in one strip.

BOMB_SIDE = 20000
PATTERN_EVERY = 1000  # rows y % PATTERN_EVERY == 0 hold pattern_row(y); the rest are zeros


def pattern_row(y: int, width: int = BOMB_SIDE) -> np.ndarray:
    """Row ``y`` of the bomb where it is not zero, ``(3, width)``."""
    return ((np.arange(width) + 7 * np.arange(3)[:, None] + y // PATTERN_EVERY) % 251).astype(np.uint8)


def write_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """Write a ``side`` x ``side`` RGB image as one deflate strip, compressed block by block; return ``path``."""
    compressor = zlib.compressobj(6)
    parts = []
    for y0 in range(0, side, PATTERN_EVERY):
        block = np.zeros((min(PATTERN_EVERY, side - y0), side, 3), dtype=np.uint8)
        block[0] = pattern_row(y0, side).T
        parts.append(compressor.compress(block.data))
    parts.append(compressor.flush())
    strip = b"".join(parts)
    tifffile.imwrite(
        path, iter([strip]), shape=(side, side, 3), dtype=np.uint8, compression="zlib", rowsperstrip=side, **RGB
    )
    return path


# A fresh interpreter ingests and prints its own peak RSS (VmHWM): the test
# process's memory is not its business (a child's ru_maxrss would include the
# parent's resident memory at fork time).
CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tilepipe.data.ingest import ingest_slide
ingest_slide(sys.argv[1], sys.argv[2], chunk=512, min_level_size=1024, assumed_mpp=0.5, threads=2, progress=False)
status = Path("/proc/self/status").read_text()
print(1024 * next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def test_single_strip_deflate_bomb_ingests_under_1_gb(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 2_000_000
    out = tmp_path / "bomb.zarr"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(bomb), str(out), str(REPO)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1])
    assert peak <= 1_000_000_000, f"peak RSS {peak / 2**20:,.0f} MiB ingesting a 20000^2 single-strip bomb"

    level0 = SlideStore(out).levels[0]
    assert level0.shape == (3, BOMB_SIDE, BOMB_SIDE)
    for y in (0, 1, 999, 1000, 13000, 13001, BOMB_SIDE - 1000, BOMB_SIDE - 1):
        expected = pattern_row(y) if y % PATTERN_EVERY == 0 else np.zeros((3, BOMB_SIDE), np.uint8)
        np.testing.assert_array_equal(level0[:, y, :], expected, err_msg=f"row {y}")


# Refused before anything is allocated: lying size tags, strips that cannot stream, bands too wide.


def claim_200000_square(path: Path, codec: str) -> Path:
    """Write a few bytes of ``codec`` data as the one strip of an image whose tags claim 200000 x 200000 RGB."""
    zeros = bytes(3 * 64 * 100)
    strip = zlib.compress(zeros) if codec == "zlib" else imagecodecs.lzw_encode(zeros)
    shape = (200_000, 200_000, 3)
    tifffile.imwrite(
        path, iter([strip]), shape=shape, dtype=np.uint8, compression=codec, rowsperstrip=200_000, bigtiff=True, **RGB
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].shape == shape
    return path


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("zlib", r"strip 0 decodes to 200000 x 200000 x 3 = 112 GiB from \d+ bytes of deflate data"),
        ("lzw", r"decodes to 200000 x 200000 x 3 = 112 GiB in one strip, .* lzw strips decode only as a whole"),
    ],
)
def test_size_tags_claiming_200000_square_are_refused_before_allocating(tmp_path, codec, message):
    path = claim_200000_square(tmp_path / "claim.tif", codec)
    out = tmp_path / "claim.zarr"
    errors = []

    def ingest() -> None:
        with pytest.raises(InputError, match=message) as info:
            ingest_slide(path, out, **SMALL)
        errors.append(info.value)

    start = time.perf_counter()
    peak = peak_bytes(ingest)
    assert time.perf_counter() - start < 5
    assert peak < 16 * 2**20
    assert errors[0].path == str(path) and str(path) in str(errors[0])
    assert not out.exists()


@pytest.mark.parametrize(
    ("compression", "planar", "where"),
    [
        ("jpeg", "contig", "in one strip"),
        ("lzw", "contig", "in one strip"),
        ("lzw", "separate", "in one strip per channel"),
    ],
)
def test_strips_that_cannot_stream_are_refused_over_the_budget_with_the_resave_command(
    tmp_path, monkeypatch, compression, planar, where
):
    path = write_strips(tmp_path / "s.tif", planar, compression=compression)
    with SlideTiff(path) as slide:  # within the default budget: decoded whole, as before
        assert not slide.streamed
        np.testing.assert_array_equal(np.concatenate(list(slide.bands(64)), axis=1), tifffile_cyx(path))

    monkeypatch.setattr(tiff, "SEGMENT_BUDGET", SMALL_BUDGET)
    with pytest.raises(InputError) as info:
        SlideTiff(path)
    message = str(info.value)
    assert info.value.path == str(path)
    assert f"decodes to 1500 x 1100 x 3 = 4.7 MiB {where}, more than the 1 MiB" in message
    assert "vips tiffsave in.tif out.tif --tile --tile-width 512 --tile-height 512" in message
    assert "bfconvert -tilex 512 -tiley 512" in message


def test_a_row_of_tiles_over_the_budget_is_refused(tmp_path, small_budget):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, random_rgb(), tile=(1024, 1024), compression="zlib", **RGB)
    with pytest.raises(InputError, match=r"one row of 1024 x 1024 tiles decodes to 1024 x 1100 x 3 = 3.2 MiB.*vips"):
        SlideTiff(path)


def test_floating_point_predictor_is_refused_for_streamed_strips(tmp_path, small_budget):
    path = write_strips(tmp_path / "s.tif", compression="zlib", predictor=True)
    patch_tag(path, "Predictor", 3)
    with pytest.raises(InputError, match=r"floatingpoint predictor is not supported"):
        SlideTiff(path)


def test_a_band_over_the_band_budget_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    path = write_strips(tmp_path / "s.tif", compression="zlib")
    monkeypatch.setattr(tiff, "BAND_BUDGET", 2**20)
    with SlideTiff(path) as slide, pytest.raises(InputError, match=r"a band of 512 rows decodes to 512 x 1100 x 3"):
        next(slide.bands(512))


def test_strip_count_short_of_the_size_tags_is_refused(tmp_path):
    path = write_strips(tmp_path / "s.tif", rowsperstrip=100, compression="zlib")
    patch_tag(path, "ImageLength", 200_000)
    with pytest.raises(InputError, match=r"200000 x 1100 image in 2000 tiles/strips but list only 15"):
        SlideTiff(path)


# Corrupt streamed strips: an InputError naming the strip, and no store.


def test_truncated_streamed_strip_is_an_input_error(tmp_path, small_budget):
    path = write_strips(tmp_path / "s.tif", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        count = tif.pages[0].databytecounts[0]
    patch_tag(path, "StripByteCounts", count // 2)
    out = tmp_path / "s.zarr"
    with pytest.raises(InputError, match=r"corrupt image data in tile/strip 0 \(its deflate data ends \d+ decoded"):
        ingest_slide(path, out, **SMALL)
    assert not out.exists()


def test_garbage_in_a_streamed_strip_is_an_input_error(tmp_path, small_budget):
    path = write_strips(tmp_path / "s.tif", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset + count // 3 : offset + count // 3 + 4096] = np.random.default_rng(1).bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupt image data in tile/strip 0"):
        ingest_slide(path, tmp_path / "s.zarr", **SMALL)
