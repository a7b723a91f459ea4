"""Pseudo-labels: an ensemble's thresholded prediction as the labels of an unlabeled slide.

A pseudo-label store ``results/pseudo/{id}.zarr`` holds only
``labels/glomeruli`` (the same NGFF label image, level shapes and chunks as
a slide store's labels); the slide's image stays in its slide store, so
changing the pseudo threshold never rewrites images. Read it with
``SlideStore(slide_store, labels_path=pseudo_store)``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.stores.ngff import create_label_levels, list_label
from tilepipe.stores.probability import foreground_cutoff, read_probability
from tilepipe.stores.slide import LABEL_NAME, SlideStore


def write_pseudo_labels(
    slide_store: str | os.PathLike,
    probability_store: str | os.PathLike,
    out_path: str | os.PathLike,
    threshold: float,
    *,
    threads: int,
) -> int:
    """Write the mask ``probability >= threshold`` as the pseudo-label store ``out_path``.

    Swept in bands of the image's chunk rows (no whole-slide mask). Returns
    the number of foreground pixels. The store appears atomically.
    ``threads`` (the rule's) threads encode the chunks while the calling
    thread waits.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    store = SlideStore(slide_store)
    probability = read_probability(probability_store)
    if probability.shape != store.shape:
        raise InputError(
            probability_store, f"prediction shape {probability.shape} differs from the slide's {store.shape}"
        )
    cutoff = foreground_cutoff(threshold)
    shapes = [store.level_shape(level) for level in range(len(store.levels))]
    chunk = store.levels[0].chunks[-1]
    band_rows = store.levels[0].chunks[-2]
    height = store.shape[0]
    foreground = 0
    with atomic_output(out_path) as tmp, ThreadPoolExecutor(threads) as pool:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        labels = root.require_group("labels")
        writer = create_label_levels(labels.require_group(LABEL_NAME), shapes, chunk=chunk, name=LABEL_NAME, pool=pool)
        for y0 in range(0, height, band_rows):
            band = (probability[y0 : y0 + band_rows, :] >= cutoff).astype(np.uint8)
            foreground += int(band.sum(dtype=np.int64))
            writer.write(band)
        list_label(labels, LABEL_NAME)
        root.attrs["tilepipe"] = {
            "kind": "pseudo-labels",
            "slide_store": Path(slide_store).name,
            "prediction": Path(probability_store).name,
            "threshold": threshold,
        }
    return foreground
