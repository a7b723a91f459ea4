"""The torch Dataset and DataLoader of training: tiles read from slide stores, resized, augmented, normalised.

A sample is one row of a tile table (a tile index or an epoch's sample of
it, ``tilepipe.data.sampler``): the ``size`` x ``size`` level-0 window at
``(y, x)`` of slide ``slide``, zero-filled past the slide's border, resized
to ``input_size`` x ``input_size`` with ``cv2.INTER_AREA``.

The image is read from the pyramid level nearest the model's scale (see
:func:`tilepipe.data.preprocess.auto_level`), so a 1024 px tile trained at 320 px costs a 512 px
read; the mask is read at level 0 (it compresses well and its empty chunks
are not stored) and thresholded at 0.5 after resizing. Tiles whose
``mask_area`` (a tile index column) is 0 get an empty mask without a read.

With stain normalisation (:mod:`tilepipe.data.stain`), each slide's
resized image goes through its slide's map before the augmentations, as
inference maps its windows.

Randomness: the augmentations of sample ``i`` are seeded from
``(seed, epoch, i)`` alone, so a batch is the same whatever the number of
workers and the order in which they load samples.
"""

from __future__ import annotations

import os
import random

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from tilepipe.data.augment import reseed
from tilepipe.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    auto_level,
    normalisation,
    normalise,
    resize_image,
    resize_mask,
)
from tilepipe.data.stain import ReinhardMap
from tilepipe.errors import InputError
from tilepipe.seeding import derive_seed
from tilepipe.stores.slide import SlideStore

__all__ = ["TileDataset", "make_loader", "seed_worker"]

TILE_COLUMNS = ("slide", "y", "x", "size")


class TileDataset(Dataset):
    """Training samples from the rows of a tile table.

    ``tiles`` needs the columns ``slide``, ``y``, ``x`` and ``size`` (level-0
    pixels); with a ``mask_area`` column, tiles where it is 0 are taken to
    have an empty mask and their labels are not read. ``stores`` maps each
    slide id to its slide store path; ``labels`` maps the slides whose mask
    lives in a pseudo-label store (:mod:`tilepipe.inference.pseudo`) to that store.
    ``level`` is a pyramid level to read images from, or ``"auto"`` for
    :func:`tilepipe.data.preprocess.auto_level` of each tile. ``augment`` (an albumentations pipeline
    taking a (y, x, c) uint8 ``image`` and a (y, x) uint8 ``mask``) runs on
    uint8 before normalisation; it is reseeded for every sample from
    ``(seed, epoch, index)``. ``stain`` maps every slide to its stain
    normalisation (:func:`tilepipe.data.stain.slide_map`), applied to the
    resized image before the augmentations; None: no normalisation.

    Item ``i`` is a dict:

    - ``image``: float32 tensor (3, S, S), ``(rgb / 255 - mean) / std``;
    - ``mask``: float32 tensor (1, S, S) of 0/1;
    - ``clf``: float32 scalar tensor, 1 if the augmented mask is not empty;
    - ``slide``, ``y``, ``x``: the tile, for debugging.

    When the image level ``l > 0``, the window read there starts at
    ``(y // 2**l, x // 2**l)``, so tiles whose origin is not a multiple of
    ``2**l`` are shifted by less than one pixel of that level against their mask.

    Stores are opened lazily, once per process (DataLoader workers open
    their own; nothing open is ever pickled).
    """

    def __init__(
        self,
        tiles: pd.DataFrame,
        stores: dict[str, str | os.PathLike],
        input_size: int,
        augment: A.Compose | None = None,
        level: int | str = "auto",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
        epoch: int = 0,
        labels: dict[str, str | os.PathLike] | None = None,
        stain: dict[str, ReinhardMap] | None = None,
    ):
        missing = [c for c in TILE_COLUMNS if c not in tiles.columns]
        if missing:
            raise InputError(None, f"tile table lacks column(s) {', '.join(missing)}")
        if level != "auto" and not (isinstance(level, int) and level >= 0):
            raise InputError(None, f"image level must be 'auto' or an integer >= 0, got {level!r}")
        self.slides = tiles["slide"].astype(str).to_numpy()
        unknown = sorted(set(self.slides) - set(stores))
        if unknown:
            raise InputError(None, f"no slide store given for slide(s) {', '.join(unknown)}")
        self.ys = tiles["y"].to_numpy(dtype=np.int64)
        self.xs = tiles["x"].to_numpy(dtype=np.int64)
        self.sizes = tiles["size"].to_numpy(dtype=np.int64)
        if "mask_area" in tiles.columns:
            self.mask_empty = tiles["mask_area"].to_numpy() == 0
        else:
            self.mask_empty = np.zeros(len(tiles), dtype=bool)
        if stain is not None:
            unmapped = sorted(set(self.slides) - set(stain))
            if unmapped:
                raise InputError(None, f"no stain normalisation given for slide(s) {', '.join(unmapped)}")
        self.stain = stain
        self.store_paths = {slide: os.fspath(stores[slide]) for slide in set(self.slides)}
        self.label_paths = {slide: os.fspath(path) for slide, path in (labels or {}).items()}
        self.input_size = int(input_size)
        self.augment = augment
        self.level = level
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.scale, self.offset = normalisation(mean, std)
        self._stores: dict[str, SlideStore] = {}
        self._stores_pid = os.getpid()

    def __len__(self) -> int:
        return len(self.slides)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stores"] = {}
        return state

    def store(self, slide: str) -> SlideStore:
        """Return this process's SlideStore of ``slide`` (opened on first use)."""
        if self._stores_pid != os.getpid():  # a forked worker: the parent's stores are not ours
            self._stores, self._stores_pid = {}, os.getpid()
        store = self._stores.get(slide)
        if store is None:
            store = self._stores[slide] = SlideStore(self.store_paths[slide], self.label_paths.get(slide))
        return store

    def image_level(self, store: SlideStore, tile_size: int) -> int:
        """Return the pyramid level the image of a ``tile_size`` tile is read from."""
        if self.level == "auto":
            return auto_level(tile_size, self.input_size, len(store.levels))
        if self.level >= len(store.levels):
            raise InputError(store.path, f"image level {self.level} requested; the store has {len(store.levels)}")
        return self.level

    def read_tile(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return tile ``index`` resized: image (S, S, 3) uint8 RGB and mask (S, S) uint8 0/1."""
        store = self.store(self.slides[index])
        y, x, size = int(self.ys[index]), int(self.xs[index]), int(self.sizes[index])
        level = self.image_level(store, size)
        down = 2**level
        level_size = -(-size // down)
        image = store.read_image(y // down, x // down, level_size, level_size, level)
        if self.mask_empty[index]:
            mask = np.zeros((self.input_size, self.input_size), dtype=np.uint8)
        else:
            mask = resize_mask(store.read_labels(y, x, size, size), self.input_size)
        return resize_image(image, self.input_size), mask

    def __getitem__(self, index: int) -> dict:
        image, mask = self.read_tile(index)
        if self.stain is not None:
            image = self.stain[self.slides[index]].apply(image)
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


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy's and Python's global generators from torch's.

    Torch seeds each worker from the loader's generator and the worker id;
    this passes that seed on. (It leaves OpenCV's threads alone:
    ``cv2.setNumThreads`` in a forked worker can deadlock on the thread pool
    copied from the parent.)
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 (the global RNG is what libraries draw from)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    device_type: str,
    seed: int,
    epoch: int,
    drop_last: bool = False,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """Return a DataLoader over ``dataset`` whose order is a function of ``(seed, epoch)``.

    Pins memory when ``device_type`` is ``"cuda"``; workers are not
    persistent (each epoch's dataset is new) and are seeded by
    :func:`seed_worker`. ``multiprocessing_context`` is ``"fork"``,
    ``"spawn"``, ``"forkserver"`` or None (the platform's default).
    """
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, epoch))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=device_type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        generator=generator,
    )
