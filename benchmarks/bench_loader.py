"""Training loader speed: tilepipe.data.tile_dataset against the 1st-place JPEG tiles and rasterio windows.

Builds one synthetic tissue-like slide (default 8192 x 8192) under
``benchmarks/data/loader/`` (generated, never committed; reused while its
parameters match) and writes it three ways:

- a slide store (``tests.builders.write_slide_store``, chunk ``--chunk``,
  its codec), plus a re-chunked copy (``--variant``, default image chunks
  256, label chunks 512, the same codec);
- 1024 px JPEG tiles + PNG masks, cut as the 1st place did
  (``baselines/jpeg_tiles.py``);
- tiled (512 px) TIFFs of the image and of the mask, uncompressed and
  deflate, for rasterio window reads.

The samples are epochs of the recipe: the slide's 1024 / 512-shift tile
index, background dropped (``img_std > 10``), balanced by
``tilepipe.data.sampler.sample_epoch``; the first ``--samples`` of as many epochs
as needed, in shuffled order. Every loader reads the same samples into the
same 320 px output with the same augmentations (seeded per sample alike),
mask threshold and normalisation, in one process and one thread (torch,
OpenCV, zarr, Blosc set so; GDAL reads in the calling thread; GDAL's block
cache and tilepipe's decoded-chunk cache both ``GDAL_CACHEMAX``, 16 MB), through a
DataLoader with ``num_workers=0`` and batches of 16. Rates are samples per
second of process CPU time (per core; load from other processes inflates
wall time much more than CPU time) and of wall time, the best of
``--rounds`` passes run round-robin. Then a per-stage breakdown and, with
``--sweep``, store chunk sizes x codecs.

    python benchmarks/bench_loader.py [--size 8192] [--samples 160] [--rounds 5] [--variant 256/512/lz4-bitshuffle] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("GDAL_CACHEMAX", "16")  # MB: a real slide set does not fit GDAL's block cache

import cv2
import numcodecs.blosc
import numpy as np
import pandas as pd
import rasterio
import tifffile
import torch
import zarr
from baselines.jpeg_tiles import JpegTileDataset, tile_stem, write_tiles
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.builders
from tests.builders import write_slide_store
from tilepipe.data.augment import RECIPE_AUGMENTATIONS, build_augmentations, reseed
from tilepipe.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    auto_level,
    normalisation,
    normalise,
    resize_image,
    resize_mask,
)
from tilepipe.data.sampler import sample_epoch
from tilepipe.data.tile_dataset import TileDataset
from tilepipe.data.tile_index import build_tile_index
from tilepipe.stores import chunks, ngff
from tilepipe.stores.slide import SlideStore, read_window

DATA = Path(__file__).resolve().parent / "data" / "loader"
SLIDE = "bench"
TILE, SHIFT, INPUT, BATCH = 1024, 512, 320, 16
SATURATION = 30  # the schema default of tiles.saturation_threshold
TIFF_TILE = 512
TIFF_COMPRESSIONS = {"uncompressed": None, "deflate": "zlib"}
SWEEP_CHUNKS = [(256, 256), (256, 512), (256, 1024), (512, 512)]  # (image chunk, label chunk)
CODECS = {
    "lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1),
    "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
    "zstd-1": ZstdCodec(level=1),
    "none": None,
}


def synthetic_slide(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a tissue-like (3, y, x) uint8 RGB slide and its (y, x) 0/1 glomerulus mask.

    Smooth tissue islands on a light background, cell-sized stain texture,
    pixel noise (so codecs see realistic entropy), and one disc 150-480 px
    across per megapixel of tissue, darker inside and ringed by a pale capsule.
    """
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.random((48, 48)).astype(np.float32), (0, 0), 3)
    field = cv2.resize((field - field.min()) / np.ptp(field), (width, height), interpolation=cv2.INTER_CUBIC)
    tissue = field > 0.45
    mask = np.zeros((height, width), dtype=np.uint8)
    ys, xs = np.nonzero(tissue[::64, ::64])
    for k in rng.choice(ys.size, size=min(height * width // 10**6, ys.size), replace=False):
        cv2.circle(mask, (int(xs[k]) * 64, int(ys[k]) * 64), int(rng.integers(75, 240)), 1, -1)
    cells = rng.standard_normal((height // 4, width // 4), dtype=np.float32)
    texture = cv2.resize(cv2.GaussianBlur(cells, (0, 0), 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    texture *= 1 / texture.std()
    stain = np.clip(texture, 0, None) * np.where(mask, 1.6, 0.6).astype(np.float32) + mask * np.float32(0.8)
    capsule = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((7, 7), np.uint8)) > 0
    image = np.empty((3, height, width), dtype=np.uint8)
    for c, (background, tissue_colour, darkening) in enumerate(
        zip((236, 234, 238), (214, 140, 186), (-60, -70, -35), strict=False)
    ):
        value = np.where(tissue, tissue_colour + darkening * stain + 8 * texture, background + 2 * texture)
        value += rng.standard_normal((height, width), dtype=np.float32) * 4
        value[capsule] = background
        image[c] = np.clip(value, 0, 255)
    return image, mask


def prepare(size: int, samples: int, chunk: int, seed: int) -> Path:
    """Generate (or reuse) the slide, its store, JPEG tiles, TIFFs and tile list; return their folder."""
    params = {"size": size, "samples": samples, "chunk": chunk, "seed": seed, "codec": repr(ngff.CODEC), "version": 2}
    folder = DATA / f"{size}_{samples}_{chunk}_{seed}"
    if (folder / "params.json").is_file() and json.loads((folder / "params.json").read_text()) == params:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    image, mask = synthetic_slide(size, size, seed)
    write_slide_store(folder / f"{SLIDE}.zarr", image, mask, chunk=chunk)
    index = build_tile_index(folder / f"{SLIDE}.zarr", SLIDE, TILE, SHIFT, saturation_threshold=SATURATION)
    tissue = index[index.img_std > 10]
    epochs = [sample_epoch(tissue, epoch=0, seed=seed)]
    while sum(map(len, epochs)) < samples:
        epochs.append(sample_epoch(tissue, epoch=len(epochs), seed=seed))
    tiles = pd.concat(epochs).sample(frac=1.0, random_state=seed).head(samples).reset_index(drop=True)
    tiles.to_parquet(folder / "tiles.parquet")
    write_tiles(image, mask, SLIDE, tiles, folder / "jpeg")
    rgb = np.ascontiguousarray(image.transpose(1, 2, 0))
    for name, compression in TIFF_COMPRESSIONS.items():
        tiling = {"tile": (TIFF_TILE, TIFF_TILE), "compression": compression}
        tifffile.imwrite(folder / f"{SLIDE}_{name}.tif", rgb, photometric="rgb", **tiling)
        tifffile.imwrite(folder / f"{SLIDE}_{name}_mask.tif", mask, photometric="minisblack", **tiling)
    (folder / "params.json").write_text(json.dumps(params))
    print(f"prepared {folder} in {time.perf_counter() - started:.0f} s")
    return folder


class RasterioTileDataset(TileDataset):
    """Samples read as 1024 px windows of tiled TIFFs with rasterio; items as TileDataset's.

    The datasets are opened once per process (rasterio handles cannot be
    pickled); windows past the border are clipped and zero-padded. Only
    :meth:`read_tile` is its own: augmentation, normalisation and the item
    are ``TileDataset.__getitem__``'s, so a comparison measures the reads.
    """

    def __init__(
        self,
        tiles: pd.DataFrame,
        image_tiff: Path,
        mask_tiff: Path,
        input_size: int,
        augment=None,
        seed: int = 0,
        epoch: int = 0,
    ):
        self.ys = tiles["y"].to_numpy(dtype=np.int64)
        self.xs = tiles["x"].to_numpy(dtype=np.int64)
        self.sizes = tiles["size"].to_numpy(dtype=np.int64)
        self.slides = tiles["slide"].astype(str).to_numpy()
        self.paths = (image_tiff, mask_tiff)
        self.input_size, self.augment, self.seed, self.epoch = input_size, augment, seed, epoch
        self.scale, self.offset = normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self.opened = None

    def __len__(self) -> int:
        return len(self.ys)

    def window(self, dataset, y: int, x: int, size: int) -> np.ndarray:
        """The (bands, size, size) window at (y, x), zero-padded past the border."""
        out = np.zeros((dataset.count, size, size), dtype=np.uint8)
        y1, x1 = min(y + size, dataset.height), min(x + size, dataset.width)
        if y1 > y and x1 > x:
            out[:, : y1 - y, : x1 - x] = dataset.read(window=Window(x, y, x1 - x, y1 - y))
        return out

    def read_tile(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.opened is None:
            self.opened = tuple(rasterio.open(path) for path in self.paths)
        y, x, size = int(self.ys[index]), int(self.xs[index]), int(self.sizes[index])
        image = resize_image(self.window(self.opened[0], y, x, size), self.input_size)
        mask = resize_mask(self.window(self.opened[1], y, x, size)[0], self.input_size)
        return image, mask


def one_pass(dataset: Dataset) -> tuple[float, float]:
    """Load every sample once through a single-process DataLoader; return (CPU s, wall s)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in DataLoader(dataset, batch_size=BATCH, num_workers=0):
        pass
    return time.process_time() - cpu, time.perf_counter() - wall


def rates(datasets: dict[str, Dataset], rounds: int) -> dict[str, tuple[float, float]]:
    """Best samples/s (per CPU second, per wall second) of each dataset over ``rounds`` passes.

    Passes run round-robin after one warm-up pass each (page cache, opened
    files), so load from other processes hits every loader alike; the best
    pass is the one least disturbed by it.
    """
    for dataset in datasets.values():
        one_pass(dataset)
    times = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, dataset in datasets.items():
            times[name].append(one_pass(dataset))
    return {
        name: (len(datasets[name]) / min(c for c, _ in passes), len(datasets[name]) / min(w for _, w in passes))
        for name, passes in times.items()
    }


def cpu_ms(call, items) -> float:
    """Mean CPU milliseconds of ``call(item)`` over ``items`` (best of 3 passes)."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for item in items:
            call(item)
        best = min(best, (time.process_time() - start) / len(items) * 1e3)
    return best


def stage_breakdown(folder: Path, tiles: pd.DataFrame) -> list[tuple[str, float]]:
    """CPU ms per sample of each stage of the three loaders, on the benchmark's tiles."""
    store = SlideStore(folder / f"{SLIDE}.zarr")
    level = auto_level(TILE, INPUT, len(store.levels))
    down = 2**level
    origins = list(zip(tiles.y.astype(int), tiles.x.astype(int), strict=False))
    stems = [folder / "jpeg" / tile_stem(SLIDE, y, x, TILE) for y, x in origins]
    rio = RasterioTileDataset(tiles, *tiff_paths(folder, "uncompressed"), INPUT)
    rio_deflate = RasterioTileDataset(tiles, *tiff_paths(folder, "deflate"), INPUT)
    rio[0], rio_deflate[0]
    no_cache = chunks._ChunkCache(0)

    def read_uncached(o):
        cache, chunks.CACHE = chunks.CACHE, no_cache
        try:
            store.read_image(o[0] // down, o[1] // down, TILE // down, TILE // down, level)
        finally:
            chunks.CACHE = cache

    level_images = [store.read_image(y // down, x // down, TILE // down, TILE // down, level) for y, x in origins]
    level0_images = [read_window(store.levels[0], y, x, TILE, TILE) for y, x in origins[:20]]
    masks = [store.read_labels(y, x, TILE, TILE) for y, x in origins]
    augment = build_augmentations(RECIPE_AUGMENTATIONS)
    small = [
        (resize_image(image, INPUT), resize_mask(mask.copy(), INPUT))
        for image, mask in zip(level_images, masks, strict=False)
    ]
    scale = (1 / (255 * np.asarray(IMAGENET_STD, dtype=np.float32))).astype(np.float32)
    offset = (-np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255 * scale).astype(np.float32)

    def augment_one(pair):
        reseed(augment, 0)
        augment(image=pair[0], mask=pair[1])

    masked = [(y, x) for (y, x), area in zip(origins, tiles.mask_area, strict=False) if area > 0]
    return [
        (
            f"store: read level {level} ({TILE // down} px window)",
            cpu_ms(lambda o: store.read_image(o[0] // down, o[1] // down, TILE // down, TILE // down, level), origins),
        ),
        (f"store: read level {level} ({TILE // down} px window), chunk cache off", cpu_ms(read_uncached, origins)),
        (
            f"store: read level {level} ({TILE // down} px window) through zarr",
            cpu_ms(
                lambda o: read_window(store.levels[level], o[0] // down, o[1] // down, TILE // down, TILE // down),
                origins,
            ),
        ),
        (
            "store: read level-0 labels, 1024 px (tiles with mask_area > 0 only)",
            cpu_ms(lambda o: store.read_labels(o[0], o[1], TILE, TILE), masked),
        ),
        (
            f"resize {TILE // down} -> {INPUT} (INTER_AREA, per channel)",
            cpu_ms(lambda i: resize_image(i, INPUT), level_images),
        ),
        (
            f"mask resize {TILE} -> {INPUT} + threshold (non-empty masks)",
            cpu_ms(lambda m: resize_mask(m.copy(), INPUT), [m for m in masks if m.any()]),
        ),
        (
            "store: read level 0 (1024 px window), for comparison",
            cpu_ms(lambda o: store.read_image(o[0], o[1], TILE, TILE, 0), origins[:20]),
        ),
        (f"resize 1024 -> {INPUT} (INTER_AREA, per channel)", cpu_ms(lambda i: resize_image(i, INPUT), level0_images)),
        (
            "jpeg: cv2.imread 1024 JPEG + BGR->RGB",
            cpu_ms(lambda s: cv2.cvtColor(cv2.imread(f"{s}.jpg"), cv2.COLOR_BGR2RGB), stems),
        ),
        ("jpeg: cv2.imread 1024 PNG mask", cpu_ms(lambda s: cv2.imread(f"{s}.png", cv2.IMREAD_GRAYSCALE), stems)),
        (
            "rasterio: read 1024 window, uncompressed tiled TIFF",
            cpu_ms(lambda o: rio.window(rio.opened[0], o[0], o[1], TILE), origins),
        ),
        (
            "rasterio: read 1024 window, deflate tiled TIFF",
            cpu_ms(lambda o: rio_deflate.window(rio_deflate.opened[0], o[0], o[1], TILE), origins),
        ),
        ("recipe augmentations at 320 px", cpu_ms(augment_one, small)),
        ("normalise to (3, 320, 320) float32", cpu_ms(lambda p: normalise(p[0], scale, offset), small)),
    ]


def tiff_paths(folder: Path, name: str) -> tuple[Path, Path]:
    return folder / f"{SLIDE}_{name}.tif", folder / f"{SLIDE}_{name}_mask.tif"


def store_variant(folder: Path, image_chunk: int, label_chunk: int, codec_name: str) -> Path:
    """Return a copy of the benchmark's slide store re-chunked and re-encoded (written once).

    Image arrays get ``(3, image_chunk, image_chunk)`` chunks, label arrays
    ``(label_chunk, label_chunk)``, every array the codec ``codec_name``;
    attributes are copied, so it is the same slide store to SlideStore.
    """
    path = folder / "variants" / f"image{image_chunk}_labels{label_chunk}_{codec_name}.zarr"
    if not path.is_dir():
        source = zarr.open_group(folder / f"{SLIDE}.zarr", mode="r")
        chunks = {3: (3, image_chunk, image_chunk), 2: (label_chunk, label_chunk)}
        copy_group(source, zarr.open_group(path, mode="w", zarr_format=3), CODECS[codec_name], chunks)
    return path


def copy_group(source: zarr.Group, target: zarr.Group, codec, chunks: dict[int, tuple[int, ...]]) -> None:
    """Copy a zarr group (attributes, arrays, subgroups), arrays re-encoded with ``codec``.

    ``chunks`` maps an array's number of dimensions to its new chunk shape.
    """
    target.attrs.update(source.attrs.asdict())
    for name, array in source.arrays():
        copy = target.create_array(
            name,
            shape=array.shape,
            chunks=chunks[array.ndim],
            dtype=array.dtype,
            compressors=codec,
            fill_value=0,
            dimension_names=array.metadata.dimension_names,
            config={"write_empty_chunks": False},
        )
        copy[...] = array[...]
    for name, group in source.groups():
        copy_group(group, target.create_group(name), codec, chunks)


def megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def sweep(folder: Path, tiles: pd.DataFrame, rounds: int) -> list[str]:
    """Markdown rows: per image chunk x label chunk x codec, store size, read costs and loader rates."""
    augment = build_augmentations(RECIPE_AUGMENTATIONS)
    origins = list(zip(tiles.y.astype(int), tiles.x.astype(int), strict=False))
    masked = [(y, x) for (y, x), area in zip(origins, tiles.mask_area, strict=False) if area > 0]
    rows = []
    for image_chunk, label_chunk in SWEEP_CHUNKS:
        for codec_name in CODECS:
            path = store_variant(folder, image_chunk, label_chunk, codec_name)
            store = SlideStore(path)
            level = auto_level(TILE, INPUT, len(store.levels))
            down = 2**level
            read = cpu_ms(
                lambda o, store=store, down=down, level=level: store.read_image(
                    o[0] // down, o[1] // down, TILE // down, TILE // down, level
                ),
                origins,
            )
            labels = cpu_ms(lambda o, store=store: store.read_labels(o[0], o[1], TILE, TILE), masked)
            speed = rates(
                {
                    "aug": TileDataset(tiles, {SLIDE: path}, INPUT, augment, seed=0),
                    "plain": TileDataset(tiles, {SLIDE: path}, INPUT, seed=0),
                },
                rounds,
            )
            rows.append(
                f"| {image_chunk} | {label_chunk} | {codec_name} | {megabytes(path):.0f} | {read:.2f} | {labels:.2f} "
                f"| {speed['aug'][0]:.0f} | {speed['plain'][0]:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def loaders(folder: Path, tiles: pd.DataFrame, variant: Path, augment) -> dict[str, Dataset]:
    """The compared loaders over ``tiles`` by name, tilepipe's two first."""
    store_path = folder / f"{SLIDE}.zarr"
    store = SlideStore(store_path)
    level = auto_level(TILE, INPUT, len(store.levels))
    found = {
        f"tilepipe TileDataset, store chunk {store.levels[0].chunks[-1]} (ngff's codec), image level {level}": TileDataset(
            tiles, {SLIDE: store_path}, INPUT, augment, seed=0
        ),
        f"tilepipe TileDataset, store {variant.stem}, image level {level}": TileDataset(
            tiles, {SLIDE: variant}, INPUT, augment, seed=0
        ),
        "1st place: JPEG tiles + PNG masks": JpegTileDataset(tiles, folder / "jpeg", INPUT, augment, seed=0),
    }
    for name in TIFF_COMPRESSIONS:
        found[f"rasterio: 1024 window, {name} tiled TIFF"] = RasterioTileDataset(
            tiles, *tiff_paths(folder, name), INPUT, augment, seed=0
        )
    return found


def comparison(folder: Path, tiles: pd.DataFrame, variant: Path, rounds: int) -> list[str]:
    """Markdown table of every loader with and without augmentations, and tilepipe's speed-ups (CPU time)."""
    table = [
        (
            "| loader | augmentations | samples/s per core (CPU time) | samples/s (wall) "
            "| tilepipe (default store) / loader | tilepipe (variant store) / loader |"
        ),
        "|---|---|---:|---:|---:|---:|",
    ]
    for augmented in (True, False):
        augment = build_augmentations(RECIPE_AUGMENTATIONS) if augmented else None
        measured = rates(loaders(folder, tiles, variant, augment), rounds)
        ours, ours_variant = (cpu_rate for cpu_rate, _ in list(measured.values())[:2])
        for name, (cpu_rate, wall_rate) in measured.items():
            table.append(
                f"| {name} | {'recipe' if augmented else 'none'} | {cpu_rate:.0f} | {wall_rate:.0f} "
                f"| {ours / cpu_rate:.2f}x | {ours_variant / cpu_rate:.2f}x |"
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="slide side in pixels")
    parser.add_argument("--samples", type=int, default=160, help="tiles per pass")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes per loader (best)")
    parser.add_argument("--chunk", type=int, default=512, help="chunk side of the main slide store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant",
        default="256/512/lz4-bitshuffle",
        help="also time the loader on a copy of the store: IMAGE_CHUNK/LABEL_CHUNK/CODEC",
    )
    parser.add_argument("--sweep", action="store_true", help="also compare store chunk sizes and codecs")
    args = parser.parse_args()

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.set_nthreads(1)
    # The store's decoded-chunk cache gets the budget of GDAL's block cache.
    chunks.CACHE.max_bytes = int(os.environ["GDAL_CACHEMAX"]) * 2**20
    folder = prepare(args.size, args.samples, args.chunk, args.seed)
    image_chunk, label_chunk, codec_name = args.variant.split("/")
    variant = store_variant(folder, int(image_chunk), int(label_chunk), codec_name)
    tiles = pd.read_parquet(folder / "tiles.parquet")
    tiles_written = tiles[["y", "x"]].drop_duplicates().shape[0]
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores; store codec {ngff.CODEC}; slide {args.size}^2, {len(tiles)} samples "
        f"({int(tiles.is_masked.sum())} masked) of {tiles_written} tiles, {TILE} -> {INPUT}; "
        f"JPEG+PNG {megabytes(folder / 'jpeg') / tiles_written:.2f} MB per tile; "
        f"store {megabytes(folder / f'{SLIDE}.zarr'):.0f} MB, variant {megabytes(variant):.0f} MB, "
        + ", ".join(
            f"TIFF {name} {sum(p.stat().st_size for p in tiff_paths(folder, name)) / 1e6:.0f} MB"
            for name in TIFF_COMPRESSIONS
        )
    )
    print("\n".join(comparison(folder, tiles, variant, args.rounds)))

    print("\n| stage | CPU ms per sample |\n|---|---:|")
    for stage, ms in stage_breakdown(folder, tiles):
        print(f"| {stage} | {ms:.2f} |")

    if args.sweep:
        print(
            "\n| image chunk | label chunk | codec | store MB | read level-1 512 px, CPU ms "
            "| read labels 1024 px (masked tiles), CPU ms | samples/s per core, recipe aug "
            "| samples/s per core, no aug |\n|---:|---:|---|---:|---:|---:|---:|---:|"
        )
        sweep(folder, tiles, args.rounds)


if __name__ == "__main__":
    main()
