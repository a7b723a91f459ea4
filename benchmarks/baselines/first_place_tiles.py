"""The 1st-place tile preparation, re-implemented after its description.

DESIGN section 4 and ../shared/articles/000 ("1024x1024 tiles plus 1024x1024
tiles shifted by (512, 512)"), as the winner's data-preparation step did it:
open the slide with rasterio (each band of a 3-subdataset TIFF opened on
its own), decode the whole RLE mask into memory, then for every 1024 x 1024
window of the base grid and of the (512, 512)-shifted grid read the window,
zero-fill it past the border, save the image tile as a JPEG (cv2, RGB -> BGR)
and the mask tile as a pickled RLE, and record one row per tile: file names,
masked pixels, masked ratio and the pixel std of the tile. Reading is
sequential (rasterio datasets cannot be shared across workers); encoding and
writing run on every core, as the original's joblib ``Parallel(n_jobs=-1)``.

Two simplifications, both in the baseline's favour: tiles are processed as
they are read instead of being stacked in memory and sorted by mask area,
and the tile origins are those of tilepipe's tile index (every origin inside
the slide), so both sides produce the same set of tiles.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

from baselines.article001 import mask2rle, rle2mask

TILE = 1024
SHIFT = 512


def open_layers(path: str | os.PathLike) -> tuple[rasterio.DatasetReader, list]:
    """Open the slide; return the dataset and its one-band subdatasets (empty if it has 3 bands)."""
    data = rasterio.open(path)
    layers = [] if data.count == 3 else [rasterio.open(s) for s in data.subdatasets]
    return data, layers


def read_tile(data, layers, y: int, x: int, height: int, width: int) -> np.ndarray:
    """Read the ``(TILE, TILE, 3)`` uint8 RGB tile at ``(y, x)``, zero-filled past the border."""
    y1, x1 = min(y + TILE, height), min(x + TILE, width)
    tile = np.zeros((TILE, TILE, 3), np.uint8)
    window = Window.from_slices((y, y1), (x, x1))
    if data.count == 3:
        tile[: y1 - y, : x1 - x] = np.moveaxis(data.read([1, 2, 3], window=window), 0, -1)
    else:
        for i, layer in enumerate(layers):
            tile[: y1 - y, : x1 - x, i] = layer.read(1, window=window)
    return tile


def save_tile(out_dir: Path, name: str, image: np.ndarray, mask: np.ndarray) -> list:
    """Write the JPEG and pickled-RLE files of one tile; return its row of the tile table."""
    image_file = out_dir / f"{name}_img.jpg"
    cv2.imwrite(str(image_file), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    rle_file = out_dir / f"{name}_rle"
    with open(rle_file, "wb") as f:
        pickle.dump(mask2rle(mask), f)
    masked = int(mask.sum())
    return [image_file.name, rle_file.name, masked, masked / mask.size, float(image.std())]


def prepare_tiles(tiff_path: str | os.PathLike, rle: str, out_dir: str | os.PathLike) -> list[list]:
    """Cut one slide into base and shifted 1024 tiles under ``out_dir``; return the tile rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, layers = open_layers(tiff_path)
    height, width = data.height, data.width
    mask = rle2mask(rle, (width, height))
    rows = []
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        futures = []
        for shift in (0, SHIFT):
            for y in range(shift, height, TILE):
                for x in range(shift, width, TILE):
                    image = read_tile(data, layers, y, x, height, width)
                    mask_tile = np.zeros((TILE, TILE), np.uint8)
                    part = mask[y : y + TILE, x : x + TILE]
                    mask_tile[: part.shape[0], : part.shape[1]] = part
                    futures.append(pool.submit(save_tile, out_dir, f"{shift}_{y}_{x}", image, mask_tile))
        rows = [f.result() for f in futures]
    data.close()
    for layer in layers:
        layer.close()
    return rows
