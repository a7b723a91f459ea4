"""The 1st-place training loader: one JPEG file per 1024 px tile, plus its mask.

Source: the 1st-place write-up (../shared/articles/000_e6876da92dbcc093.txt,
"制作 1024x1024 瓦片+偏移的 1024x1024 瓦片" and its training code
tikutikutiku/kaggle-hubmap, ``src/02_train/dataset.py``): tiles are cut
once, written with ``cv2.imwrite`` and read back per sample with
``cv2.imread``, converted to RGB and resized to the input size with
``cv2.INTER_AREA``. The original kept masks as pickled RLE strings; here
they are PNG files (``cv2.imread`` grayscale), as DESIGN section 7 states the
baseline. Everything after the read (mask threshold, augmentations and their
per-sample seeds, normalisation, output dict) is ``tilepipe.data.tile_dataset``'s, so a
comparison with :class:`tilepipe.data.tile_dataset.TileDataset` measures the storage.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from tilepipe.data.augment import reseed
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalise, resize_mask
from tilepipe.seeding import derive_seed
from tilepipe.stores.slide import read_window


def tile_stem(slide: str, y: int, x: int, size: int) -> str:
    """File name stem of one tile: ``{slide}_{y}_{x}_{size}``."""
    return f"{slide}_{y}_{x}_{size}"


def write_tiles(image_cyx: np.ndarray, mask_yx: np.ndarray, slide: str, tiles: pd.DataFrame, out_dir: Path) -> None:
    """Write each distinct tile of ``tiles`` as ``{stem}.jpg`` (cv2 default quality 95) and ``{stem}.png``.

    ``image_cyx`` is the (3, y, x) uint8 RGB slide and ``mask_yx`` its (y, x)
    0/1 mask; tiles are zero-filled past the border, as the 1st place's were.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for y, x, size in tiles[["y", "x", "size"]].drop_duplicates().itertuples(index=False):
        stem = tile_stem(slide, y, x, size)
        rgb = read_window(image_cyx, y, x, size, size).transpose(1, 2, 0)
        cv2.imwrite(str(out_dir / f"{stem}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out_dir / f"{stem}.png"), read_window(mask_yx, y, x, size, size))


class JpegTileDataset(Dataset):
    """Samples read from per-tile JPEG/PNG files; items as ``tilepipe.data.tile_dataset.TileDataset``'s."""

    def __init__(
        self,
        tiles: pd.DataFrame,
        tile_dir: str | os.PathLike,
        input_size: int,
        augment=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        seed: int = 0,
        epoch: int = 0,
    ):
        self.stems = [tile_stem(*row) for row in tiles[["slide", "y", "x", "size"]].itertuples(index=False)]
        self.slides = tiles["slide"].astype(str).to_numpy()
        self.ys = tiles["y"].to_numpy(dtype=np.int64)
        self.xs = tiles["x"].to_numpy(dtype=np.int64)
        self.tile_dir = Path(tile_dir)
        self.input_size = input_size
        self.augment = augment
        self.seed, self.epoch = seed, epoch
        std_array = np.asarray(std, dtype=np.float32)
        self.scale = (1 / (255 * std_array)).astype(np.float32)
        self.offset = (-np.asarray(mean, dtype=np.float32) / std_array).astype(np.float32)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        size = (self.input_size, self.input_size)
        image = cv2.imread(str(self.tile_dir / f"{self.stems[index]}.jpg"))
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = resize_mask(
            cv2.imread(str(self.tile_dir / f"{self.stems[index]}.png"), cv2.IMREAD_GRAYSCALE), self.input_size
        )
        if self.augment is not None:
            reseed(self.augment, derive_seed(self.seed, self.epoch, index))
            augmented = self.augment(image=image, mask=mask)
            image, mask = augmented["image"], augmented["mask"]
        return {
            "image": torch.from_numpy(normalise(image, self.scale, self.offset)),
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "clf": torch.tensor(float(mask.any()), dtype=torch.float32),
            "slide": self.slides[index],
            "y": int(self.ys[index]),
            "x": int(self.xs[index]),
        }
