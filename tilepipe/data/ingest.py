"""Ingest one slide: a giant TIFF (+ its RLE or polygons) -> ``results/slides/{id}.zarr``.

One sweep over the TIFF in bands of ``chunk`` full-width rows: a
background thread decodes the next band (:mod:`tilepipe.io.tiff`) while the
current one is written to every pyramid level (:mod:`tilepipe.stores.ngff`)
together with the same rows of the mask, decoded from the RLE or
rasterized from the polygons band by band. Memory holds a few bands,
whatever the slide's size. The store appears atomically, or not at all.

Threads: ingest starts at most ``threads`` threads (the rule's; SLURM
gives the job that many CPUs). With 1 there is no background thread: the
main thread decodes and one pool thread encodes the chunks while it waits
(Blosc called from the main thread would start threads of its own). With
2 the background thread decodes and one pool thread encodes; with more,
the background thread and ``threads - 1`` pool threads that both decode
and encode.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.io.pixel_size import PixelSize, read_pixel_size
from tilepipe.io.polygons import load_polygons, rasterize
from tilepipe.io.rle import parse as parse_rle
from tilepipe.io.tiff import SlideTiff
from tilepipe.stores.ngff import create_image, create_labels, level_shapes, set_pixel_size
from tilepipe.stores.slide import LABEL_NAME

__all__ = ["ingest_slide"]

MaskBands = Callable[[int, int], np.ndarray]


def ingest_slide(
    tiff_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    rle: str | None = None,
    label_source: str | None = None,
    polygons_path: str | os.PathLike | None = None,
    polygon_coordinates: str = "auto",
    expected_shape: tuple[int, int] | None = None,
    chunk: int,
    min_level_size: int,
    threads: int,
    assumed_mpp: float,
    progress: bool = True,
) -> PixelSize:
    """Write the slide store of ``tiff_path`` to ``out_path`` (a ``.zarr`` directory).

    Labels come from ``rle`` (Kaggle RLE of the glomerulus mask; ``label_source``
    names where it was read, for error messages) or else from the polygons
    JSON at ``polygons_path``, its coordinates read in the pixel convention
    ``polygon_coordinates`` (``ingest.polygon_coordinates``: ``"auto"``,
    ``"centres"`` or ``"edges"``; :func:`tilepipe.io.polygons.load_polygons`);
    with neither the store has no labels group.
    ``expected_shape`` is the ``(height, width)`` in pixels the dataset
    information gives for the slide. ``chunk`` is the chunk side (and band
    height) in pixels; levels are halved until the long side is at most
    ``min_level_size``. ``threads`` is the most threads ingest starts (the
    rule's ``threads``; see the module docstring). ``progress`` shows a bar
    on stderr.

    The pixel size is the one the TIFF states
    (:func:`tilepipe.io.pixel_size.read_pixel_size`), else ``assumed_mpp``
    micrometres (``data.mpp``); the store keeps it as NGFF scales in
    micrometres and as ``attrs["tilepipe"]["pixel_size"]`` (``x_um``,
    ``y_um``, ``source``). Returns it.

    Raises :class:`InputError` naming the offending file for an unreadable,
    truncated or corrupt TIFF, an image that is not 8-bit RGB (RGBA is
    composited over white: :mod:`tilepipe.io.tiff`), a stated pixel size
    outside 0.05..50 um, a size that differs from ``expected_shape``, and
    bad labels; nothing is left at ``out_path`` (an existing store there
    stays as it was).
    """
    tiff_path, out_path = Path(tiff_path), Path(out_path)
    if chunk <= 0 or chunk % 2:
        raise ValueError(f"chunk must be a positive even number of pixels, got {chunk}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    with SlideTiff(tiff_path) as slide:
        pixel_size = read_pixel_size(tiff_path, assumed_mpp, slide.tif)
        height, width = slide.shape
        if expected_shape is not None and tuple(expected_shape) != (height, width):
            eh, ew = expected_shape
            raise InputError(
                tiff_path,
                f"image is {height} x {width} pixels (height x width) but the dataset information says {eh} x {ew}",
            )
        mask_bands = _mask_bands(
            rle, label_source or f"RLE of {tiff_path.name}", polygons_path, polygon_coordinates, (height, width)
        )
        with atomic_output(out_path) as tmp, ThreadPoolExecutor(max(1, threads - 1)) as pool:
            group = zarr.open_group(tmp, mode="w", zarr_format=3)
            shapes = level_shapes(height, width, min_level_size)
            name = out_path.name.removesuffix(".zarr")
            image = create_image(group, shapes, chunk=chunk, name=name, pool=pool)
            labels = None if mask_bands is None else create_labels(group, LABEL_NAME, shapes, chunk=chunk, pool=pool)
            with tqdm(
                total=height,
                unit="row",
                desc=tiff_path.name,
                disable=not progress,
                file=sys.stderr,
                mininterval=2.0,
            ) as bar:
                y0 = 0
                if threads == 1:
                    bands = slide.bands(chunk)
                else:
                    bands = _prefetched(slide.bands(chunk, pool if threads > 2 else None))
                for band in bands:
                    y1 = y0 + band.shape[1]
                    image.write(band)
                    if labels is not None:
                        labels.write(mask_bands(y0, y1))
                    bar.update(y1 - y0)
                    y0 = y1
            if not image.done:
                raise InputError(tiff_path, f"image data ended after {y0} of {height} rows")
            set_pixel_size(group, pixel_size.y_um, pixel_size.x_um)
            group.attrs["tilepipe"] = {"pixel_size": asdict(pixel_size)}
    return pixel_size


def _mask_bands(
    rle_text: str | None,
    label_source: str,
    polygons_path: str | os.PathLike | None,
    polygon_coordinates: str,
    shape: tuple[int, int],
) -> MaskBands | None:
    """Return ``mask(y0, y1) -> (y1 - y0, width)`` uint8 0/1 rows of the labels, or None.

    The RLE wins over the polygons; either is parsed and validated here,
    before anything is written.
    """
    width = shape[1]
    if rle_text is not None:
        runs = parse_rle(rle_text, shape, source=label_source)
        return lambda y0, y1: runs.window(y0, y1, 0, width)
    if polygons_path is not None:
        outlines = load_polygons(polygons_path, size=shape, convention=polygon_coordinates)
        return lambda y0, y1: rasterize(outlines, y0, y1, 0, width)
    return None


def _prefetched(items: Generator[np.ndarray, None, None], depth: int = 1) -> Iterator[np.ndarray]:
    """Yield ``items``, computing up to ``depth`` ahead in a background thread.

    An exception in the producer is re-raised here; if the consumer stops
    early, the producer is told to stop, closes ``items`` and is joined.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((done, None))
        except BaseException as err:
            handoff.put((None, err))
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="tiff-bands", daemon=True)
    thread.start()
    try:
        while True:
            item, err = handoff.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                handoff.get_nowait()
            thread.join(timeout=0.1)
