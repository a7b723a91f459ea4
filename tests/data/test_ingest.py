"""Ingest: TIFF layouts -> slide store, labels, bad input, atomic output."""

from __future__ import annotations

import contextlib
import json
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tilepipe
from tilepipe.data.ingest import _prefetched, ingest_slide
from tilepipe.errors import InputError
from tilepipe.io import rle
from tilepipe.io.polygons import Polygon, load_polygons, rasterize, write_polygons
from tilepipe.io.tiff import SlideTiff
from tilepipe.stores.ngff import max_2x2, mean_2x2
from tilepipe.stores.slide import SlideStore

HEIGHT, WIDTH = 301, 437  # odd, and not a multiple of the tiles, strips or chunks below
CHUNK = 64
SMALL = {"chunk": CHUNK, "min_level_size": 100, "assumed_mpp": 0.5, "progress": False, "threads": 2}


def rgb_pixels(seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 image: smooth colour ramps plus noise (so JPEG keeps detail)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([y * 255 // height, x * 255 // width, (x + y) % 256], axis=-1)
    return (ramps + rng.integers(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)


def write_tiff(path: Path, layout: str) -> Path:
    """Write the test image in ``layout`` (see LAYOUTS) to ``path``; return ``path``."""
    hwc = rgb_pixels()
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    rgb = {"photometric": "rgb"}
    if layout == "tiled-zlib-contig":
        tifffile.imwrite(path, hwc, tile=(48, 64), compression="zlib", **rgb)
    elif layout == "tiled-lzw-planar":
        tifffile.imwrite(path, chw, tile=(64, 80), compression="lzw", planarconfig="separate", **rgb)
    elif layout == "tiled-jpeg":
        tifffile.imwrite(path, hwc, tile=(64, 64), compression="jpeg", **rgb)
    elif layout == "tiled-jpeg-ycbcr":
        tifffile.imwrite(path, hwc, tile=(64, 64), compression="jpeg", photometric="ycbcr")
    elif layout == "tiled-raw-bigtiff":
        tifffile.imwrite(path, hwc, tile=(32, 48), bigtiff=True, **rgb)
    elif layout == "strip-raw-contig":
        tifffile.imwrite(path, hwc, rowsperstrip=HEIGHT, **rgb)
    elif layout == "strips-raw-planar":
        tifffile.imwrite(path, chw, rowsperstrip=10, planarconfig="separate", **rgb)
    elif layout == "strips-lzw":
        tifffile.imwrite(path, hwc, rowsperstrip=7, compression="lzw", **rgb)
    elif layout == "strips-zlib-predictor":
        tifffile.imwrite(path, hwc, rowsperstrip=16, compression="zlib", predictor=True, **rgb)
    elif layout == "pages-1x1x3":  # tifffile.imread -> (1, 1, 3, y, x): one page per channel
        tifffile.imwrite(path, chw[None, None], photometric="minisblack", compression="zlib")
    elif layout == "pages-3":  # tifffile.imread -> (3, y, x): one page per channel
        tifffile.imwrite(path, chw, photometric="minisblack", rowsperstrip=32)
    elif layout == "subifd-pyramid":
        with tifffile.TiffWriter(path) as tif:
            tif.write(hwc, subifds=2, tile=(64, 64), compression="zlib", **rgb)
            tif.write(hwc[::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib", **rgb)
            tif.write(hwc[::4, ::4], subfiletype=1, tile=(64, 64), compression="zlib", **rgb)
    elif layout == "thumbnail-page-first":
        with tifffile.TiffWriter(path) as tif:
            tif.write(hwc[::8, ::8], **rgb)
            tif.write(hwc, tile=(64, 64), compression="zlib", **rgb)
    else:
        raise ValueError(layout)
    return path


LAYOUTS = [
    "tiled-zlib-contig",
    "tiled-lzw-planar",
    "tiled-jpeg",
    "tiled-jpeg-ycbcr",
    "tiled-raw-bigtiff",
    "strip-raw-contig",
    "strips-raw-planar",
    "strips-lzw",
    "strips-zlib-predictor",
    "pages-1x1x3",
    "pages-3",
    "subifd-pyramid",
    "thumbnail-page-first",
]


def as_cyx(pixels: np.ndarray) -> np.ndarray:
    """tifffile.imread's array of an RGB image as ``(3, y, x)``."""
    pixels = pixels.squeeze()
    return pixels.transpose(2, 0, 1) if pixels.shape[-1] == 3 else pixels


def level0_of(path: Path) -> np.ndarray:
    """What tifffile reads as the full-resolution image, ``(3, y, x)``."""
    with tifffile.TiffFile(path) as tif:
        series = max(tif.series, key=lambda s: s.levels[0].size)
        return as_cyx(series.levels[0].asarray())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_level0_equals_tifffile_for_every_layout(tmp_path, layout):
    tiff = write_tiff(tmp_path / f"{layout}.tiff", layout)
    ingest_slide(tiff, tmp_path / "slide.zarr", expected_shape=(HEIGHT, WIDTH), **SMALL)

    store = SlideStore(tmp_path / "slide.zarr")
    expected = level0_of(tiff)
    assert expected.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(store.levels[0][:], expected)


@pytest.mark.parametrize("layout", ["strip-raw-contig", "strips-raw-planar", "pages-3"])
def test_uncompressed_strips_are_read_by_offset_not_decoded(tmp_path, layout):
    with SlideTiff(write_tiff(tmp_path / "s.tiff", layout)) as slide:
        assert slide.contiguous
        assert "contiguous reads" in slide.layout


@pytest.mark.parametrize("layout", ["tiled-zlib-contig", "strips-lzw", "subifd-pyramid"])
def test_bands_have_the_requested_rows_and_cover_the_image(tmp_path, layout):
    tiff = write_tiff(tmp_path / "s.tiff", layout)
    with SlideTiff(tiff) as slide:
        bands = list(slide.bands(50))
    assert [b.shape[1] for b in bands] == [50] * 6 + [1]
    assert all(b.shape == (3, b.shape[1], WIDTH) and b.dtype == np.uint8 for b in bands)
    np.testing.assert_array_equal(np.concatenate(bands, axis=1), level0_of(tiff))


def test_pyramid_levels_are_2x2_means_down_to_min_level_size(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "tiled-zlib-contig")
    ingest_slide(tiff, tmp_path / "slide.zarr", **SMALL)

    store = SlideStore(tmp_path / "slide.zarr")
    assert [store.level_shape(level) for level in range(len(store.levels))] == [
        (301, 437),
        (151, 219),
        (76, 110),
        (38, 55),
    ]
    level = store.levels[0][:]
    for array in store.levels[1:]:
        level = mean_2x2(level)
        np.testing.assert_array_equal(array[:], level)
        assert array.chunks == (3, CHUNK, CHUNK)


def test_mean_2x2_rounds_half_up_and_averages_odd_edges_with_themselves():
    block = np.array([[[0, 1, 7], [0, 2, 8], [4, 6, 9]]], dtype=np.uint8)
    np.testing.assert_array_equal(mean_2x2(block), [[[1, 8], [5, 9]]])


def glomerulus_mask(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[20:90, 30:110] = 1
    mask[200:260, 300:437] = 1  # touches the right border
    mask[0, 0] = mask[-1, -1] = 1
    return mask


def test_rle_labels_match_the_decoded_mask_and_skip_empty_chunks(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    mask = glomerulus_mask()
    ingest_slide(tiff, tmp_path / "slide.zarr", rle=rle.encode(mask), **SMALL)

    store = SlideStore(tmp_path / "slide.zarr")
    np.testing.assert_array_equal(store.labels[:], mask)
    labels = zarr.open_group(tmp_path / "slide.zarr" / "labels" / "glomeruli", mode="r")
    np.testing.assert_array_equal(labels["1"][:], max_2x2(mask))
    chunks_dir = tmp_path / "slide.zarr" / "labels" / "glomeruli" / "0" / "c"
    stored = {p.relative_to(chunks_dir).parts for p in chunks_dir.rglob("*") if p.is_file()}
    rows, cols = -(-HEIGHT // CHUNK), -(-WIDTH // CHUNK)
    nonempty = {
        (str(i), str(j))
        for i in range(rows)
        for j in range(cols)
        if mask[i * CHUNK : (i + 1) * CHUNK, j * CHUNK : (j + 1) * CHUNK].any()
    }
    assert stored == nonempty and len(nonempty) < rows * cols


def test_polygon_labels_match_a_full_window_raster(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "tiled-zlib-contig")
    outline = np.array([[40.5, 30.0], [400.0, 60.0], [380.0, 290.0], [60.0, 250.0]])
    write_polygons(tmp_path / "s.json", [Polygon(outline)])
    ingest_slide(tiff, tmp_path / "slide.zarr", polygons_path=tmp_path / "s.json", **SMALL)

    expected = rasterize(load_polygons(tmp_path / "s.json"), 0, HEIGHT, 0, WIDTH)
    assert expected.sum() > 10_000
    np.testing.assert_array_equal(SlideStore(tmp_path / "slide.zarr").labels[:], expected)


def test_qupath_geojson_labels_are_its_pixels_unless_told_to_read_centres(tmp_path):
    from tilepipe.objects.export import write_objects

    tiff = write_tiff(tmp_path / "s.tiff", "tiled-zlib-contig")
    mask = glomerulus_mask()
    write_objects(mask * 255, 128, tmp_path / "s.geojson", tmp_path / "s.csv", slide_id="s", mpp=0.5, min_area=0)
    ingest_slide(tiff, tmp_path / "edges.zarr", polygons_path=tmp_path / "s.geojson", **SMALL)
    np.testing.assert_array_equal(SlideStore(tmp_path / "edges.zarr").labels[:], mask)

    ingest_slide(
        tiff, tmp_path / "centres.zarr", polygons_path=tmp_path / "s.geojson", polygon_coordinates="centres", **SMALL
    )
    centres = SlideStore(tmp_path / "centres.zarr").labels[:]
    assert (centres >= mask).all() and centres.sum() > mask.sum()  # cv2 also draws the right and bottom outline


def test_rle_wins_over_polygons_and_no_source_means_no_labels_group(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    (tmp_path / "bad.json").write_text("not json")
    ingest_slide(tiff, tmp_path / "rle.zarr", rle="", polygons_path=tmp_path / "bad.json", **SMALL)
    ingest_slide(tiff, tmp_path / "none.zarr", **SMALL)

    assert SlideStore(tmp_path / "rle.zarr").labels[:].max() == 0
    assert not (tmp_path / "none.zarr" / "labels").exists()
    assert SlideStore(tmp_path / "none.zarr").labels is None


def test_store_is_read_by_ome_zarr_with_its_label(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    tiff = write_tiff(tmp_path / "s.tiff", "tiled-jpeg")
    ingest_slide(tiff, tmp_path / "slide.zarr", rle=rle.encode(glomerulus_mask()), **SMALL)

    nodes = list(Reader(parse_url(tmp_path / "slide.zarr"))())
    image = nodes[0]
    assert image.load(Multiscales) is not None
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    assert image.data[0].shape == (3, HEIGHT, WIDTH) and len(image.data) == 4
    labels = [n for n in nodes if n.load(Label) is not None]
    assert [n.metadata["name"] for n in labels] == ["glomeruli"]
    assert labels[0].data[0].shape == (HEIGHT, WIDTH)


def test_prefetch_passes_items_and_errors_and_closes_the_producer_on_early_stop():
    closed = []

    def numbers():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    items = _prefetched(numbers())
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert closed == [True]

    def failing():
        yield "band"
        raise InputError("x.tiff", "corrupt")

    with pytest.raises(InputError, match="corrupt"):
        list(_prefetched(failing()))


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    ingest_slide(
        tiff, tmp_path / "slide.zarr", chunk=CHUNK, min_level_size=100, assumed_mpp=0.5, progress=True, threads=1
    )
    captured = capsys.readouterr()
    assert "s.tiff" in captured.err and f"{HEIGHT}/{HEIGHT}" in captured.err
    assert captured.out == ""


# Bad input: an InputError naming the file, and nothing left behind.


def assert_fails_cleanly(tiff: Path, out: Path, match: str, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        ingest_slide(tiff, out, **{**SMALL, **kwargs})
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return info.value


def test_truncated_tiff_is_an_input_error(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "tiled-zlib-contig")
    data = tiff.read_bytes()
    tiff.write_bytes(data[: len(data) // 2])
    err = assert_fails_cleanly(tiff, tmp_path / "slide.zarr", "truncated")
    assert err.path == str(tiff)


def test_truncated_uncompressed_strip_is_an_input_error(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strip-raw-contig")
    data = tiff.read_bytes()
    tiff.write_bytes(data[: len(data) - 1000])
    assert_fails_cleanly(tiff, tmp_path / "slide.zarr", "truncated")


def test_corrupt_tile_data_is_an_input_error(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "tiled-zlib-contig")
    with tifffile.TiffFile(tiff) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[20], page.databytecounts[20]
    data = bytearray(tiff.read_bytes())
    data[offset + count // 3 : offset + count // 3 + 64] = bytes(64)
    tiff.write_bytes(bytes(data))
    assert_fails_cleanly(tiff, tmp_path / "slide.zarr", r"corrupt image data in tile/strip 20")


@pytest.mark.parametrize("where", [0, 4])
def test_corrupt_header_is_an_input_error(tmp_path, where):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    data = bytearray(tiff.read_bytes())
    data[where : where + 4] = b"\xde\xad\xbe\xef"
    tiff.write_bytes(bytes(data))
    assert_fails_cleanly(tiff, tmp_path / "slide.zarr", "not a readable TIFF")


def test_not_a_tiff_and_missing_file_are_input_errors(tmp_path):
    (tmp_path / "text.tiff").write_text("hello")
    assert_fails_cleanly(tmp_path / "text.tiff", tmp_path / "a.zarr", "not a readable TIFF")
    assert_fails_cleanly(tmp_path / "missing.tiff", tmp_path / "b.zarr", "does not exist")


@pytest.mark.parametrize(
    ("pixels", "kwargs", "found"),
    [
        (np.zeros((40, 50), np.uint16), {}, r"found uint16 with 1 channel, shape \(40, 50\)"),
        (np.zeros((40, 50), np.uint8), {}, r"found uint8 with 1 channel.*single-channel \(greyscale or fluorescence\)"),
        (
            np.zeros((40, 50, 4), np.uint8),
            {"photometric": "minisblack", "planarconfig": "contig"},
            r"found uint8 with 4 channels.*multiplexed",
        ),
        (np.zeros((5, 40, 50), np.uint8), {"photometric": "minisblack"}, r"found uint8 with 5 channels"),
        (np.zeros((40, 50, 4), np.uint8), {"photometric": "separated"}, r"with 4 channels.*CMYK"),
        (np.zeros((40, 50, 3), np.float32), {"photometric": "rgb"}, r"found float32 with 3 channels.*8-bit RGB"),
        (np.zeros((40, 50, 3), np.uint16), {"photometric": "rgb"}, r"found uint16 with 3 channels.*vips scale"),
        (np.zeros((40, 50, 4), np.uint16), {"photometric": "rgb"}, r"found uint16 with 4 channels"),
    ],
)
def test_image_that_is_not_8bit_rgb_is_an_input_error(tmp_path, pixels, kwargs, found):
    tifffile.imwrite(tmp_path / "s.tiff", pixels, **kwargs)
    err = assert_fails_cleanly(tmp_path / "s.tiff", tmp_path / "slide.zarr", found)
    assert err.path == str(tmp_path / "s.tiff")


def rgba_pixels() -> np.ndarray:
    """The test image plus an alpha sample: opaque but for a transparent corner and a half-transparent band."""
    alpha = np.full((HEIGHT, WIDTH, 1), 255, np.uint8)
    alpha[:40, :60] = 0
    alpha[150:170] = np.arange(WIDTH, dtype=np.uint16)[None, :, None] * 255 // (WIDTH - 1)
    return np.concatenate([rgb_pixels(), alpha], axis=-1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": (48, 64), "compression": "zlib"},
        {"rowsperstrip": HEIGHT},  # one uncompressed strip: read by offset
        {"rowsperstrip": 10, "planarconfig": "separate"},
        {"rowsperstrip": 16, "compression": "zlib", "predictor": True},
    ],
)
@pytest.mark.parametrize("extrasample", ["unassalpha", "assocalpha", "unspecified"])
def test_rgba_is_composited_over_white_and_opaque_pixels_keep_their_rgb(tmp_path, kwargs, extrasample):
    rgba = rgba_pixels()
    tiff = tmp_path / "s.tiff"
    pixels = rgba.transpose(2, 0, 1) if kwargs.get("planarconfig") == "separate" else rgba
    tifffile.imwrite(tiff, pixels, photometric="rgb", extrasamples=[extrasample], **kwargs)
    ingest_slide(tiff, tmp_path / "slide.zarr", **SMALL)
    rgb, alpha = rgba[..., :3].astype(np.int64), rgba[..., 3:].astype(np.int64)
    if extrasample == "unassalpha":
        expected = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    elif extrasample == "assocalpha":
        expected = np.minimum(rgb + 255 - alpha, 255)
    else:  # not alpha: dropped
        expected = rgb
    level0 = SlideStore(tmp_path / "slide.zarr").levels[0][:]
    np.testing.assert_array_equal(level0, expected.transpose(2, 0, 1))
    opaque = rgba[..., 3] == 255
    np.testing.assert_array_equal(level0.transpose(1, 2, 0)[opaque], rgba[..., :3][opaque])
    if extrasample != "unspecified":
        assert (level0[:, :40, :60] == 255).all()  # fully transparent: white, like glass


def test_rgba_streamed_strips_and_the_layout_say_rgba(tmp_path, monkeypatch):
    from tilepipe.io import tiff as tiff_module

    monkeypatch.setattr(tiff_module, "SEGMENT_BUDGET", 64 * 1024)  # the one strip is streamed
    rgba = rgba_pixels()
    path = tmp_path / "s.tiff"
    tifffile.imwrite(path, rgba, photometric="rgb", rowsperstrip=HEIGHT, compression="zlib")
    with SlideTiff(path) as slide:
        assert slide.streamed and "contig RGBA" in slide.layout
        bands = list(slide.bands(CHUNK))
    alpha = rgba[..., 3:].astype(np.int64)
    expected = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    np.testing.assert_array_equal(np.concatenate(bands, axis=1), expected.transpose(2, 0, 1))


def test_size_mismatch_with_dataset_information_names_both_sizes(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    err = assert_fails_cleanly(tiff, tmp_path / "slide.zarr", "dataset information", expected_shape=(WIDTH, HEIGHT))
    assert "301 x 437" in str(err) and "437 x 301" in str(err) and str(tiff) in str(err)


def test_bad_rle_names_its_source_and_leaves_nothing(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    assert_fails_cleanly(
        tiff,
        tmp_path / "slide.zarr",
        r"train.csv \(id s\).*odd number",
        rle="1 2 3",
        label_source="train.csv (id s)",
    )


def test_failed_rerun_leaves_the_existing_store_untouched(tmp_path):
    good = write_tiff(tmp_path / "good.tiff", "strips-lzw")
    out = tmp_path / "slide.zarr"
    ingest_slide(good, out, **SMALL)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    corrupt = write_tiff(tmp_path / "bad.tiff", "tiled-zlib-contig")
    corrupt.write_bytes(corrupt.read_bytes()[:3000])
    with pytest.raises(InputError):
        ingest_slide(corrupt, out, **SMALL)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tiff", "good.tiff", "slide.zarr"]


def test_odd_chunk_is_refused():
    with pytest.raises(ValueError, match="even"):
        ingest_slide("unused.tiff", "unused.zarr", chunk=63, min_level_size=100, assumed_mpp=0.5, threads=1)


def test_metadata_is_ngff_0_5(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    ingest_slide(tiff, tmp_path / "s1.zarr", rle="1 5", **SMALL)
    meta = json.loads((tmp_path / "s1.zarr" / "zarr.json").read_text())
    ome = meta["attributes"]["ome"]
    assert meta["zarr_format"] == 3 and ome["version"] == "0.5"
    multiscale = ome["multiscales"][0]
    assert multiscale["name"] == "s1"
    assert [(a["name"], a["type"], a.get("unit")) for a in multiscale["axes"]] == [
        ("c", "channel", None),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    assert [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]] == [
        [1, 0.5, 0.5],
        [1, 1, 1],
        [1, 2, 2],
        [1, 4, 4],
    ], "micrometres: the assumed data.mpp (0.5) times 2 per level"
    labels = json.loads((tmp_path / "s1.zarr" / "labels" / "zarr.json").read_text())
    assert labels["attributes"]["ome"]["labels"] == ["glomeruli"]
    label = json.loads((tmp_path / "s1.zarr" / "labels" / "glomeruli" / "zarr.json").read_text())
    assert label["attributes"]["ome"]["image-label"]["colors"][0]["label-value"] == 1


# Threads: a job runs at most the ``threads`` its rule declares.

STDLIB = sysconfig.get_paths()["stdlib"]
PACKAGE = str(Path(tilepipe.__file__).parent)


class ThreadRecord:
    """Threads started by tilepipe code: ``started`` in all, ``peak`` alive at once, ``alive`` now."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = self.alive = self.peak = 0

    def running(self, delta: int) -> None:
        with self.lock:
            self.alive += delta
            self.peak = max(self.peak, self.alive)


def started_by_tilepipe(frame) -> bool:
    """Whether the code that starts a thread (past threading, concurrent.futures...) is tilepipe's."""
    while frame is not None and frame.f_code.co_filename.startswith(STDLIB):
        frame = frame.f_back
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE)


@contextlib.contextmanager
def threads_started_by_tilepipe(monkeypatch) -> Iterator[ThreadRecord]:
    """Record every thread tilepipe starts in the block, itself or through a ThreadPoolExecutor.

    Threads libraries start for themselves (zarr's event loop and executor)
    are not counted: they are configured by the job scripts.
    """
    record = ThreadRecord()
    original_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if started_by_tilepipe(sys._getframe(1)):
            run = thread.run

            def counted_run() -> None:
                record.running(+1)
                try:
                    run()
                finally:
                    record.running(-1)

            thread.run = counted_run
            record.started += 1
        original_start(thread)

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", start)
        yield record


@pytest.mark.parametrize("layout", ["tiled-zlib-contig", "strip-raw-contig"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_ingest_runs_at_most_its_threads_at_once(tmp_path, monkeypatch, layout, threads):
    tiff = write_tiff(tmp_path / "s.tiff", layout)
    mask = glomerulus_mask()
    with threads_started_by_tilepipe(monkeypatch) as record:
        ingest_slide(tiff, tmp_path / "slide.zarr", rle=rle.encode(mask), **{**SMALL, "threads": threads})
    assert record.peak <= threads, f"{record.peak} threads at once with threads={threads}"
    assert record.peak == threads, "a thread the job may use is left idle"
    assert record.alive == 0, "threads left running after ingest returned"
    store = SlideStore(tmp_path / "slide.zarr")
    np.testing.assert_array_equal(store.levels[0][:], level0_of(tiff))
    np.testing.assert_array_equal(store.labels[:], mask)


def test_threads_must_be_given_and_positive(tmp_path):
    tiff = write_tiff(tmp_path / "s.tiff", "strips-lzw")
    with pytest.raises(TypeError, match="threads"):
        ingest_slide(tiff, tmp_path / "a.zarr", chunk=CHUNK, min_level_size=100, assumed_mpp=0.5, progress=False)
    with pytest.raises(ValueError, match="threads"):
        ingest_slide(tiff, tmp_path / "b.zarr", **{**SMALL, "threads": 0})


APERIO = "Aperio Image Library v12.0.15\r\n900x700 (240x240) JPEG/RGB Q=70|AppMag = 40|MPP = 0.2520|Date = x"


@pytest.mark.parametrize(
    ("description", "expected", "source"),
    [(APERIO, 0.252, "Aperio MPP"), ("", 0.5, "not stated by the slide; assumed data.mpp = 0.5")],
)
def test_the_store_records_the_pixel_size_in_micrometres(tmp_path, description, expected, source):
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    tiff = tmp_path / "slide.tiff"
    tifffile.imwrite(tiff, image, tile=(64, 64), description=description or None)
    mask = np.zeros((300, 400), np.uint8)
    mask[100:150, 100:200] = 1
    size = ingest_slide(tiff, tmp_path / "slide.zarr", rle=rle.encode(mask), **SMALL)
    assert (size.mpp, size.source) == (pytest.approx(expected), source)
    store = SlideStore(tmp_path / "slide.zarr")
    assert store.pixel_size(assumed_um=9.0) == size
    group = zarr.open_group(tmp_path / "slide.zarr", mode="r")
    for multiscale in (group.attrs["ome"]["multiscales"][0], group["labels/glomeruli"].attrs["ome"]["multiscales"][0]):
        units = [axis.get("unit") for axis in multiscale["axes"] if axis["type"] == "space"]
        assert units == ["micrometer", "micrometer"]
        for level, dataset in enumerate(multiscale["datasets"]):
            scale = dataset["coordinateTransformations"][0]["scale"]
            assert scale[-2:] == pytest.approx([expected * 2**level] * 2)
    assert len(group.attrs["ome"]["multiscales"][0]["datasets"]) > 1, "levels scaled, not only level 0"


def test_an_absurd_pixel_size_fails_ingest_naming_the_file_and_leaves_nothing(tmp_path):
    tiff = tmp_path / "s.svs"
    tifffile.imwrite(tiff, rgb_pixels(), tile=(64, 64), description=APERIO.replace("MPP = 0.2520", "MPP = 0.0025"))
    err = assert_fails_cleanly(tiff, tmp_path / "slide.zarr", r"Aperio MPP says 0.0025 um per pixel, outside 0.05..50")
    assert err.path == str(tiff)


def test_a_store_without_a_recorded_pixel_size_assumes_data_mpp(tmp_path):
    from tests.builders import write_slide_store

    write_slide_store(tmp_path / "old.zarr", np.zeros((3, 64, 64), np.uint8))
    size = SlideStore(tmp_path / "old.zarr").pixel_size(assumed_um=0.5)
    assert size.mpp == 0.5 and "assumed data.mpp" in size.source
