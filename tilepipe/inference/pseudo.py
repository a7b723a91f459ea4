"""Pseudo-labels: an ensemble's thresholded prediction as the labels of an unlabeled slide.

A pseudo-label store ``results/pseudo/{id}.zarr`` is one NGFF 0.5 label
image at its root (so OME-Zarr tools open it)::

    {id}.zarr/      attrs["ome"]: "multiscales" (axes y, x; type "2x2 max") and
                    "image-label" (source.image: the slide store, relative to this one,
                    e.g. "../../slides/{id}.zarr"; value 1 coloured)
                    attrs["tilepipe"]: kind "pseudo-labels", slide store, prediction, threshold
        0, 1, ...   (y, x) uint8 0/1 mask, the slide's level shapes and chunks

the same levels as a slide store's ``labels/glomeruli``. The slide's image
stays in its slide store, so changing the pseudo threshold never rewrites
images. Read it with ``SlideStore(slide_store, labels_path=pseudo_store)``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zarr

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.stores.ngff import create_label_levels, relative_source
from tilepipe.stores.probability import read_probability, write_mask
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
    the number of foreground pixels. The store appears atomically and names
    ``slide_store`` (by its path relative to ``out_path``) as its image.
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
    shapes = store.level_shapes
    chunk = store.levels[0].chunks[-1]
    band_rows = store.levels[0].chunks[-2]
    with atomic_output(out_path) as tmp, ThreadPoolExecutor(threads) as pool:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        source = relative_source(out_path, slide_store)
        writer = create_label_levels(root, shapes, chunk=chunk, name=LABEL_NAME, pool=pool, source=source)
        foreground = write_mask(probability, threshold, writer, band_rows)
        root.attrs["tilepipe"] = {
            "kind": "pseudo-labels",
            "slide_store": Path(slide_store).name,
            "prediction": Path(probability_store).name,
            "threshold": threshold,
        }
        store.copy_pixel_size_to(root)
    return foreground
