"""Ingest TIFF -> OME-Zarr: tilepipe side by side with tifffile and the 1st-place tile preparation.

Four comparisons, each printed with its ratio and a markdown row for the
"## Ingest" section of docs/benchmarks.md:

1. time: ``ingest_slide`` against a bare ``tifffile.imread`` of the same file
   (target <= 1.5x), on several TIFF layouts of a ``--size`` square slide;
   the two alternate, best of ``--repeats`` each.
2. peak RSS: ``ingest_slide`` against ``tifffile.imread`` + writing the store
   (the naive path), each in its own child process that reports its own
   peak (``VmHWM`` of /proc/self/status; a child's ``ru_maxrss`` would
   include the parent's memory at fork time), on a ``--rss-size`` square
   slide (default 24000: 1.73 GB of pixels); target <= 25 % of the raw bytes.
3. ingest + tile index against the 1st-place tile preparation
   (``baselines/first_place_tiles.py``: rasterio windows -> 1024 JPEG tiles on
   the base and the (512, 512)-shifted grid).
4. codecs (``--codecs``): encode speed and ratio of candidate chunk codecs on
   the chunks of one slide, which is how the store's codec was chosen.

Slides are synthetic but slide-like (stained tissue texture over ~50 % of the
area, near-white background) and are generated once under
``benchmarks/data/`` (git-ignored), band by band.

    python benchmarks/bench_ingest.py [--size 12000] [--rss-size 24000] [--repeats 3]
    python benchmarks/bench_ingest.py --size 4000 --rss-size 6000 --repeats 1   # quick

A quick run checks that everything works, not the targets: on small slides
the fixed costs (~0.1 s of thread pools and metadata, 65 MiB of imports)
dominate the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import imagecodecs
import numcodecs
import numpy as np
import skimage.data
import tifffile
from baselines.first_place_tiles import prepare_tiles
from bench_rle import glomerulus_mask

from tilepipe.data.ingest import ingest_slide
from tilepipe.data.tile_index import build_tile_index, write_tile_index
from tilepipe.io import rle
from tilepipe.io.tiff import SlideTiff

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
# The schema defaults of ingest.chunk and ingest.min_level_size; two threads, as the machine has.
INGEST = {"chunk": 512, "min_level_size": 1024, "threads": 2, "assumed_mpp": 0.5}
TIME_LAYOUTS = ["tiled-zlib", "tiled-lzw", "tiled-jpeg", "strip-raw", "strips-lzw"]
TEXTURE = skimage.data.immunohistochemistry()  # (512, 512, 3) uint8 stained tissue
CELL = TEXTURE.shape[0]
BACKGROUND = np.array([236, 233, 240], dtype=np.uint8)
FIELD_STEP = 64  # pixels per cell of the smooth random field that decides tissue vs background


class SyntheticSlide:
    """A deterministic slide-like RGB image, produced in bands of rows.

    Tissue (mirrored / rotated copies of scikit-image's IHC sample on a
    512-pixel grid) covers ``tissue`` of the area in smooth blobs; the rest
    is near-white background with +-1 noise.
    """

    def __init__(self, height: int, width: int, seed: int = 0, tissue: float = 0.5):
        self.height, self.width, self.seed = height, width, seed
        rng = np.random.default_rng(seed)
        field = rng.random((height // FIELD_STEP + 3, width // FIELD_STEP + 3)).astype(np.float32)
        self.field = cv2.GaussianBlur(field, (0, 0), 6)
        self.threshold = float(np.quantile(self.field, 1 - tissue))
        self.orientations = [
            np.ascontiguousarray(np.rot90(t, k)) for t in (TEXTURE, TEXTURE[:, ::-1]) for k in range(4)
        ]
        self.cell_orientation = rng.integers(0, 8, (height // CELL + 1, width // CELL + 1))

    def band(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` as a ``(y1 - y0, width, 3)`` uint8 array."""
        rows, width = y1 - y0, self.width
        r0, r1 = y0 // FIELD_STEP, (y1 - 1) // FIELD_STEP + 2
        coarse = self.field[r0:r1]
        fine = cv2.resize(coarse, (coarse.shape[1] * FIELD_STEP, coarse.shape[0] * FIELD_STEP))
        top = y0 - r0 * FIELD_STEP
        tissue = fine[top : top + rows, :width] > self.threshold
        texture = np.empty((rows, width, 3), np.uint8)
        y = y0
        while y < y1:
            cy = y // CELL
            y_end = min(y1, (cy + 1) * CELL)
            for cx in range(-(-width // CELL)):
                x0, x1 = cx * CELL, min(width, (cx + 1) * CELL)
                cell = self.orientations[self.cell_orientation[cy, cx]]
                texture[y - y0 : y_end - y0, x0:x1] = cell[y - cy * CELL : y_end - cy * CELL, : x1 - x0]
            y = y_end
        noise = np.random.default_rng((self.seed, y0)).integers(0, 3, (rows, width, 1), dtype=np.uint8)
        return np.where(tissue[..., None], texture, BACKGROUND + noise)


def synthetic_tiff(size: int, layout: str) -> Path:
    """Return ``benchmarks/data/{layout}_{size}.tiff``, writing it band by band if missing."""
    path = DATA / f"{layout}_{size}.tiff"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    slide = SyntheticSlide(size, size)
    tmp = path.with_suffix(".tmp")
    kind, compression = layout.split("-")
    rgb = {"shape": (size, size, 3), "dtype": np.uint8, "photometric": "rgb", "bigtiff": True}
    if kind == "tiled":

        def tiles():
            for y0 in range(0, size, 512):
                band = slide.band(y0, min(size, y0 + 512))
                for x0 in range(0, size, 512):
                    yield band[:, x0 : x0 + 512]

        tifffile.imwrite(tmp, tiles(), tile=(512, 512), compression=compression, maxworkers=os.cpu_count(), **rgb)
    else:
        rows_per_strip = size if kind == "strip" else 16
        encode = (lambda b: b) if compression == "raw" else imagecodecs.lzw_encode

        def strips():
            for y0 in range(0, size, 512):
                band = slide.band(y0, min(size, y0 + 512))
                for s in range(0, band.shape[0], rows_per_strip):
                    yield encode(band[s : s + rows_per_strip].tobytes())

        compression = None if compression == "raw" else compression
        tifffile.imwrite(tmp, strips(), rowsperstrip=rows_per_strip, compression=compression, **rgb)
    os.replace(tmp, path)
    return path


def slide_rle(size: int) -> str:
    """The RLE of a glomerulus-like mask (~5 % foreground) for a ``size`` square slide, cached."""
    path = DATA / f"mask_{size}.rle"
    if not path.exists():
        mask, _ = glomerulus_mask(size, 0.05, seed=1)
        path.write_text(rle.encode(mask))
    return path.read_text()


def fresh(path: Path) -> Path:
    """Remove ``path`` (file or directory) if it exists; return it."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def bare_imread(tiff: Path) -> None:
    tifffile.imread(tiff)


def best_alternating(calls: dict, repeats: int) -> dict[str, float]:
    """Run each named call in turn, ``repeats`` rounds; return each one's fastest wall time (s)."""
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            fn(*args)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_layouts(size: int, layouts: list[str], repeats: int) -> list[str]:
    """Benchmark 1; returns markdown rows."""
    out = fresh(DATA / "out" / "time.zarr")
    rle_text = slide_rle(size)
    rows = []
    for layout in layouts:
        tiff = synthetic_tiff(size, layout)
        with SlideTiff(tiff) as slide:
            description = slide.layout
        cpu = cpu_seconds()
        best = best_alternating(
            {
                "imread": (bare_imread, (tiff,)),
                "ingest": (lambda t: ingest_slide(t, fresh(out), progress=False, **INGEST), (tiff,)),
                "labelled": (lambda t: ingest_slide(t, fresh(out), rle=rle_text, progress=False, **INGEST), (tiff,)),
            },
            repeats,
        )
        cpu = cpu_seconds() - cpu
        ratio = best["ingest"] / best["imread"]
        labelled = best["labelled"] / best["imread"]
        store_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        print(
            f"time {layout} ({description}): imread {best['imread']:.2f} s, ingest {best['ingest']:.2f} s "
            f"-> {ratio:.2f}x, with RLE labels {best['labelled']:.2f} s -> {labelled:.2f}x; "
            f"file {tiff.stat().st_size / 1e6:.0f} MB, store {store_mb:.0f} MB; "
            f"{cpu:.1f} CPU-s for all {repeats} rounds",
            flush=True,
        )
        verdict = "met" if ratio <= 1.5 else f"missed by {(ratio / 1.5 - 1):.0%}"
        rows.append(
            f"| wall time, {layout} ({size}^2; {description.split(';')[0]}) | <= 1.5x imread "
            f"| {best['ingest']:.2f} s ({best['labelled']:.2f} s with labels) vs {best['imread']:.2f} s "
            f"| {ratio:.2f}x ({labelled:.2f}x) | {verdict} |"
        )
    fresh(out)
    return rows


# The measured child: imports only what ingest (or the naive path) needs, does
# the work, and prints its own peak RSS in bytes (Linux: VmHWM).
CHILD = """
import sys
from pathlib import Path
kind, tiff, out, rle_file, repo = sys.argv[1:6]
sys.path.insert(0, repo)
from tilepipe.data.ingest import ingest_slide
if kind == "ingest":
    ingest_slide(tiff, out, rle=Path(rle_file).read_text(), progress=False, chunk=512, min_level_size=1024, assumed_mpp=0.5, threads=2)
elif kind == "naive":
    import tifffile
    from tilepipe.io import rle
    from tests.builders import write_slide_store
    pixels = tifffile.imread(tiff)
    mask = rle.decode(Path(rle_file).read_text(), pixels.shape[:2])
    write_slide_store(out, pixels.transpose(2, 0, 1), mask)
status = Path("/proc/self/status").read_text()
print(1024 * next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def child_peak_rss(kind: str, tiff: Path, out: Path, rle_file: Path) -> tuple[int, float]:
    """Run ``kind`` (ingest, naive, or imports: nothing) in a fresh process; return its peak RSS and time.

    Peak RSS in bytes, wall time in seconds.
    """
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(tiff), str(fresh(out)), str(rle_file), str(REPO)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {kind} failed with exit code {done.returncode}:\n{done.stderr}")
    return int(done.stdout.split()[-1]), time.perf_counter() - start


def peak_memory(size: int) -> list[str]:
    """Benchmark 2; returns markdown rows."""
    tiff = synthetic_tiff(size, "tiled-jpeg")
    rle_file = DATA / f"mask_{size}.rle"
    slide_rle(size)
    raw = size * size * 3
    out = DATA / "out" / "rss.zarr"
    imports, _ = child_peak_rss("imports", tiff, out, rle_file)
    print(f"peak RSS of a child that only imports tilepipe.data.ingest: {imports / 2**20:,.0f} MiB", flush=True)
    rows = []
    for kind, label, target, ok in [
        ("ingest", "ingest_slide", "<= 25 % of raw", lambda f: f <= 0.25),
        ("naive", "imread + write (naive)", "> 100 % (expected)", lambda f: f > 1.0),
    ]:
        peak, seconds = child_peak_rss(kind, tiff, out, rle_file)
        fraction = peak / raw
        print(
            f"peak RSS {label}: {peak / 2**20:,.0f} MiB = {fraction:.1%} of the {raw / 2**30:.2f} GiB of pixels "
            f"({seconds:.1f} s)",
            flush=True,
        )
        verdict = "met" if ok(fraction) else "missed"
        rows.append(
            f"| peak RSS, {label} ({size}^2 JPEG-tiled, with labels) | {target} "
            f"| {peak / 2**20:,.0f} MiB (imports alone: {imports / 2**20:,.0f} MiB) | {fraction:.1%} of raw | {verdict} |"
        )
    fresh(out)
    return rows


def tile_preparation(size: int, layouts: list[str], repeats: int) -> list[str]:
    """Benchmark 3; returns markdown rows."""
    rle_text = slide_rle(size)
    store = DATA / "out" / "tiles.zarr"
    index = DATA / "out" / "tiles.parquet"
    tiles_dir = DATA / "out" / "first_place_tiles"
    rows = []

    def ours(tiff: Path) -> None:
        ingest_slide(tiff, fresh(store), rle=rle_text, progress=False, **INGEST)
        write_tile_index(build_tile_index(store, "bench", 1024, 512, saturation_threshold=30), fresh(index))

    def theirs(tiff: Path) -> None:
        prepare_tiles(tiff, rle_text, fresh(tiles_dir))

    for layout in layouts:
        tiff = synthetic_tiff(size, layout)
        best = best_alternating({"first place": (theirs, (tiff,)), "tilepipe": (ours, (tiff,))}, repeats)
        speedup = best["first place"] / best["tilepipe"]
        tiles_mb = sum(p.stat().st_size for p in tiles_dir.iterdir()) / 1e6
        store_mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 1e6
        print(
            f"tiles {layout}: 1st-place preparation {best['first place']:.2f} s ({tiles_mb:.0f} MB of JPEG tiles), "
            f"ingest + tile index {best['tilepipe']:.2f} s ({store_mb:.0f} MB store) -> {speedup:.1f}x faster",
            flush=True,
        )
        rows.append(
            f"| ingest + tile index vs 1st-place tiles, {layout} ({size}^2) | faster than the peer "
            f"| {best['tilepipe']:.2f} s vs {best['first place']:.2f} s | {speedup:.1f}x faster "
            f"| {'met' if speedup > 1 else 'missed'} |"
        )
    for path in (store, index, tiles_dir):
        fresh(path)
    return rows


def codecs(size: int) -> None:
    """Benchmark 4: encode speed (MB/s per CPU-second) and ratio of chunk codecs on one slide's chunks."""
    tiff = synthetic_tiff(size, "tiled-jpeg")
    with SlideTiff(tiff) as slide:
        bands = [band for _, band in zip(range(8), slide.bands(512), strict=False)]
    chunks = [np.ascontiguousarray(b[:, :, x : x + 512]) for b in bands for x in range(0, b.shape[2], 512)]
    raw = sum(c.nbytes for c in chunks)
    candidates = {
        "zstd level 1": numcodecs.Zstd(level=1),
        "zstd level 3": numcodecs.Zstd(level=3),
        "blosc lz4, no shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.NOSHUFFLE),
        "blosc lz4, bit shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.BITSHUFFLE),
        "blosc zstd 1, bit shuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.BITSHUFFLE),
    }
    print(f"codecs on {len(chunks)} chunks (3, 512, 512) of {tiff.name}:")
    for name, codec in candidates.items():
        start = cpu_seconds()
        encoded = [codec.encode(c) for c in chunks]
        encode_s = cpu_seconds() - start
        start = cpu_seconds()
        for e in encoded:
            codec.decode(e)
        decode_s = cpu_seconds() - start
        ratio = raw / sum(len(e) for e in encoded)
        print(
            f"  {name:26s} encode {raw / encode_s / 1e6:6.0f} MB/s, decode {raw / decode_s / 1e6:6.0f} MB/s "
            f"(per CPU-second), ratio {ratio:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12000, help="side of the timed slides in pixels (default 12000)")
    parser.add_argument("--rss-size", type=int, default=24000, help="side of the peak-RSS slide (default 24000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per timed comparison (default 3)")
    parser.add_argument("--layouts", nargs="+", default=TIME_LAYOUTS, choices=TIME_LAYOUTS)
    parser.add_argument("--tile-layouts", nargs="+", default=["tiled-jpeg", "strips-lzw"], choices=TIME_LAYOUTS)
    parser.add_argument("--skip", nargs="+", default=[], choices=["time", "rss", "tiles"], help="comparisons to skip")
    parser.add_argument("--codecs", action="store_true", help="only compare chunk codecs")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"tifffile {tifffile.__version__}, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    if args.codecs:
        codecs(args.size)
        return
    rows = []
    if "time" not in args.skip:
        rows += time_layouts(args.size, args.layouts, args.repeats)
    if "rss" not in args.skip:
        rows += peak_memory(args.rss_size)
    if "tiles" not in args.skip:
        rows += tile_preparation(args.size, args.tile_layouts, max(1, args.repeats - 1))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| comparison | target | measured (tilepipe vs peer) | ratio | verdict |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
