"""Small slide stores built from in-memory arrays, for tests and benchmarks.

The same format as :func:`tilepipe.data.ingest.ingest_slide` writes (through
the same :class:`tilepipe.stores.ngff.PyramidWriter`), without a TIFF.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from tilepipe.atomic import atomic_output
from tilepipe.stores.ngff import (
    BandReader,
    create_image,
    create_label_levels,
    create_labels,
    level_shapes,
    list_label,
    relative_source,
)
from tilepipe.stores.probability import create_probability, create_uncertainty
from tilepipe.stores.slide import LABEL_NAME, SlideStore


def write_slide_store(
    out_path: str | os.PathLike,
    image_cyx: np.ndarray,
    labels_yx: np.ndarray | None = None,
    chunk: int = 512,
    min_level_size: int = 1024,
) -> None:
    """Write an in-memory ``(3, y, x)`` uint8 image (and ``(y, x)`` mask) as a slide store.

    Same format as :func:`tilepipe.data.ingest.ingest_slide` writes; meant for
    small arrays (tests, demo data). Any non-zero label is foreground (stored
    as 1); ``labels_yx=None`` writes no labels group (an unlabeled slide).
    The store appears at ``out_path`` atomically.
    """
    image_cyx = np.asarray(image_cyx)
    if image_cyx.ndim != 3 or image_cyx.shape[0] != 3 or image_cyx.dtype != np.uint8:
        raise ValueError(f"image must be (3, y, x) uint8, got {image_cyx.dtype} {image_cyx.shape}")
    _, height, width = image_cyx.shape
    if labels_yx is not None:
        labels_yx = np.asarray(labels_yx)
        if labels_yx.shape != (height, width):
            raise ValueError(f"labels shape {labels_yx.shape} differs from image {(height, width)}")
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp, ThreadPoolExecutor(2) as pool:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        shapes = level_shapes(height, width, min_level_size)
        image = create_image(group, shapes, chunk=chunk, name=out_path.stem, pool=pool)
        for y0 in range(0, height, chunk):
            image.write(image_cyx[:, y0 : y0 + chunk])
        if labels_yx is not None:
            labels = create_labels(group, LABEL_NAME, shapes, chunk=chunk, pool=pool)
            for y0 in range(0, height, chunk):
                labels.write((labels_yx[y0 : y0 + chunk] != 0).astype(np.uint8))


def write_labels(
    store_path: str | os.PathLike,
    band_reader: BandReader,
    *,
    name: str = LABEL_NAME,
    band_rows: int | None = None,
) -> None:
    """Add (or replace) the mask ``labels/{name}`` of an existing slide store.

    ``band_reader(y0, y1)`` returns level-0 rows ``y0:y1`` of the mask as a
    ``(y1 - y0, width)`` array (non-zero = foreground); it is called top to
    bottom with bands of ``band_rows`` rows (default: the image chunk height),
    so no whole-slide mask is ever held. The mask gets the image's level
    shapes and chunks. The label group is built beside the old one and
    swapped in only when complete.
    """
    store_path = Path(store_path)
    group = zarr.open_group(store_path, mode="r+")
    levels = [group[d["path"]] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    shapes = [level.shape[-2:] for level in levels]
    height, width = shapes[0]
    band_rows = band_rows or levels[0].chunks[-2]
    labels = group.require_group("labels")
    with atomic_output(store_path / "labels" / name) as tmp, ThreadPoolExecutor(2) as pool:
        writer = create_label_levels(
            zarr.open_group(tmp, mode="w", zarr_format=3),
            shapes,
            chunk=levels[0].chunks[-1],
            name=name,
            pool=pool,
        )
        for y0 in range(0, height, band_rows):
            y1 = min(y0 + band_rows, height)
            band = np.asarray(band_reader(y0, y1))
            if band.shape != (y1 - y0, width):
                raise ValueError(f"band_reader({y0}, {y1}) returned shape {band.shape}, expected {(y1 - y0, width)}")
            writer.write((band != 0).astype(np.uint8))
    list_label(labels, name)


def write_prediction_store(
    out_path: str | os.PathLike,
    slide_store: str | os.PathLike,
    probability_yx: np.ndarray,
    uncertainty_yx: np.ndarray,
    chunk: int = 512,
) -> None:
    """Write in-memory ``(y, x)`` uint8 probability and spread maps as the prediction store of ``slide_store``.

    The layout :func:`tilepipe.inference.predict.predict_slide` writes (label
    images with the slide's level shapes and pixel size, the spread in
    ``uncertainty/``), without a model. Appears atomically.
    """
    out_path = Path(out_path)
    store = SlideStore(slide_store)
    with atomic_output(out_path) as tmp, ThreadPoolExecutor(1) as pool:
        source = relative_source(out_path, slide_store)
        probability = create_probability(tmp, out_path.stem, store.level_shapes, chunk, {}, source=source, pool=pool)
        spread = create_uncertainty(tmp, store.level_shapes, chunk, source=source, pool=pool)
        probability.write(np.asarray(probability_yx, np.uint8))
        spread.write(np.asarray(uncertainty_yx, np.uint8))
        store.copy_pixel_size_to(zarr.open_group(tmp, mode="r+"))
        store.copy_pixel_size_to(zarr.open_group(tmp / "uncertainty", mode="r+"))
