"""Write slide stores: OME-Zarr (NGFF 0.5, zarr v3) image pyramids and label masks.

A slide store (DESIGN section 3) holds the image as levels ``"0"``, ``"1"``,
... of ``(c, y, x)`` uint8, each 2x smaller than the one before, and label
masks under ``labels/{name}`` as ``(y, x)`` uint8 pyramids with the same
level shapes. Stores derived from a slide (predictions, pseudo-labels) are
label images themselves: the same ``(y, x)`` pyramid at their root, whose
``image-label.source.image`` is the relative path to the slide store
(:func:`relative_source`), so OME-Zarr readers open them on their own and
find the slide. Every level is written top to bottom in whole rows of chunks
by a :class:`PyramidWriter`, which reduces each block it writes into the
next level, so a pyramid is built in one sweep over level 0 without
reading any level back and without holding more than a band of rows.

zarr creates the groups, arrays and metadata; the chunks themselves are
encoded in a thread pool and written as files at the keys zarr's metadata
gives them. zarr's own write path costs twice the CPU per chunk (it fills a
fresh chunk, copies, scans it and schedules each chunk through asyncio),
and ingest is meant to cost little more than decoding the TIFF.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path

import cv2
import numpy as np
import zarr

from tilepipe.stores.chunks import CHUNK_ENCODER, CODEC, is_writer_format

NGFF_VERSION = "0.5"
RGB_CHANNELS = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
LABEL_RGBA = [255, 255, 0, 160]
# The colour of a predicted glomerulus everywhere it is drawn: the apply store's labels/glomeruli and the
# GeoJSON's classification (tilepipe.objects.export), which QuPath and napari show.
GLOMERULUS_RGB = (230, 60, 60)

BandReader = Callable[[int, int], np.ndarray]


def level_shapes(height: int, width: int, min_level_size: int) -> list[tuple[int, int]]:
    """Return the ``(height, width)`` of every pyramid level, level 0 first.

    Each level is the previous one halved (rounded up); the last level is
    the first whose long side is at most ``min_level_size`` pixels.
    """
    shapes = [(height, width)]
    while max(shapes[-1]) > min_level_size:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def mean_2x2(block: np.ndarray) -> np.ndarray:
    """Return the ``(c, ceil(y/2), ceil(x/2))`` 2x2 mean of a ``(c, y, x)`` uint8 block.

    Rounds half up (as ``cv2.INTER_AREA`` does); an odd last row or column
    is averaged with itself.
    """
    c, h, w = block.shape
    he, we = h - h % 2, w - w % 2
    out = np.empty((c, (h + 1) // 2, (w + 1) // 2), dtype=np.uint8)
    if he and we:
        for i in range(c):
            out[i, : he // 2, : we // 2] = cv2.resize(
                block[i, :he, :we], (we // 2, he // 2), interpolation=cv2.INTER_AREA
            )
    if w % 2:
        last = block[:, :he, -1].astype(np.uint16)
        out[:, : he // 2, -1] = (last[:, 0::2] + last[:, 1::2] + 1) // 2
    if h % 2:
        last = block[:, -1, :we].astype(np.uint16)
        out[:, -1, : we // 2] = (last[:, 0::2] + last[:, 1::2] + 1) // 2
        if w % 2:
            out[:, -1, -1] = block[:, -1, -1]
    return out


def mean_2x2_yx(block: np.ndarray) -> np.ndarray:
    """Return the ``(ceil(y/2), ceil(x/2))`` 2x2 mean of a ``(y, x)`` uint8 block (as :func:`mean_2x2`).

    Used for probability levels: a pixel of level k is then the mean
    probability of its ``2**k`` x ``2**k`` level-0 pixels (up to rounding at
    each level), i.e. the expected foreground fraction there, where a maximum
    would grow every object.
    """
    return mean_2x2(block[np.newaxis])[0]


def max_2x2(block: np.ndarray) -> np.ndarray:
    """Return the ``(ceil(y/2), ceil(x/2))`` 2x2 maximum of a ``(y, x)`` mask block.

    Used for label levels, so that small objects stay visible when zoomed out.
    """
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    return np.maximum(
        np.maximum(block[0::2, 0::2], block[0::2, 1::2]),
        np.maximum(block[1::2, 0::2], block[1::2, 1::2]),
    )


class PyramidWriter:
    """Write an image into the levels of a pyramid, band by band, top to bottom.

    ``arrays`` are the zarr arrays of levels 0, 1, ... (``(..., y, x)``
    uint8, each half the size of the previous one, in a local store);
    ``reduce`` halves a block of one level into the next. Rows given to
    :meth:`write` continue where the previous call stopped. Each level keeps
    back the rows that do not yet fill a whole row of chunks, so every chunk
    is written once, whole, and never read back; with an odd chunk height a
    band's last row also waits for its pair in the next band, so ``reduce``
    always starts on an even row. With ``skip_empty`` chunks that are all
    zero (the fill value) are not stored. ``pool`` encodes and writes the
    chunks of a row concurrently.
    """

    def __init__(
        self,
        arrays: list[zarr.Array],
        reduce: Callable[[np.ndarray], np.ndarray],
        *,
        pool: Executor,
        skip_empty: bool = False,
    ):
        for array in arrays:
            if not is_writer_format(array):
                raise ValueError(f"array {array.path!r} is not a local uint8 array encoded with {CODEC}")
        self.arrays = arrays
        self.reduce = reduce
        self.pool = pool
        self.skip_empty = skip_empty
        self.rows_written = [0] * len(arrays)
        self.pending: list[np.ndarray | None] = [None] * len(arrays)
        self.unreduced: list[np.ndarray | None] = [None] * len(arrays)

    @property
    def done(self) -> bool:
        """True once every row of every level is written."""
        return all(n == a.shape[-2] for n, a in zip(self.rows_written, self.arrays, strict=False))

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (``(..., n, width)`` uint8 of level 0) to the pyramid."""
        self._push(0, rows)

    def _push(self, level: int, rows: np.ndarray) -> None:
        array = self.arrays[level]
        pending = self.pending[level]
        if pending is not None:
            rows = np.concatenate([pending, rows], axis=-2)
        start = self.rows_written[level]
        height, chunk_rows = array.shape[-2], array.chunks[-2]
        if start + rows.shape[-2] > height:
            raise ValueError(f"level {level}: {start + rows.shape[-2]} rows given for {height}")
        ready = rows.shape[-2]
        if start + ready < height:
            ready -= ready % chunk_rows
        self.pending[level] = rows[..., ready:, :] if ready < rows.shape[-2] else None
        if ready == 0:
            return
        block = rows[..., :ready, :]
        chunk_cols = array.chunks[-1]
        jobs = [
            (
                array,
                (start + y) // chunk_rows,
                x // chunk_cols,
                block[..., y : y + chunk_rows, x : x + chunk_cols],
            )
            for y in range(0, ready, chunk_rows)
            for x in range(0, array.shape[-1], chunk_cols)
        ]
        for _ in self.pool.map(self._store_chunk, jobs):
            pass
        self.rows_written[level] = start + ready
        if level + 1 < len(self.arrays):
            self._reduce_into_next(level, block, last=start + ready == height)

    def _reduce_into_next(self, level: int, block: np.ndarray, *, last: bool) -> None:
        """Reduce the written rows ``block`` of ``level`` into the next level, in pairs of rows.

        A row without its pair (odd chunk heights only) waits for the next
        block, unless ``block`` ends the level.
        """
        carry = self.unreduced[level]
        if carry is not None:
            block = np.concatenate([carry, block], axis=-2)
        paired = block.shape[-2] if last else block.shape[-2] - block.shape[-2] % 2
        self.unreduced[level] = block[..., paired:, :].copy() if paired < block.shape[-2] else None
        if paired:
            self._push(level + 1, self.reduce(block[..., :paired, :]))

    def _store_chunk(self, job: tuple[zarr.Array, int, int, np.ndarray]) -> None:
        """Encode one chunk (zero-padded to the full chunk shape at the edges) and write its file."""
        array, row, col, pixels = job
        if self.skip_empty and not pixels.any():
            return
        if pixels.shape != array.chunks:
            full = np.zeros(array.chunks, dtype=np.uint8)
            full[..., : pixels.shape[-2], : pixels.shape[-1]] = pixels
            pixels = full
        key = array.metadata.encode_chunk_key((0,) * (array.ndim - 2) + (row, col))
        path = Path(array.store.root, array.path, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CHUNK_ENCODER.encode(np.ascontiguousarray(pixels)))


def multiscales(name: str, axes: list[dict], n_levels: int) -> list[dict]:
    """Return the NGFF ``multiscales`` list for ``n_levels`` 2x levels named "0", "1", ..."""
    spatial = sum(1 for a in axes if a["type"] == "space")
    lead = len(axes) - spatial
    return [
        {
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0] * lead + [float(2**level)] * spatial}
                    ],
                }
                for level in range(n_levels)
            ],
            "type": "2x2 mean",
        }
    ]


IMAGE_AXES = [
    {"name": "c", "type": "channel"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
]
LABEL_AXES = IMAGE_AXES[1:]


def image_attrs(name: str, n_levels: int) -> dict:
    """Return the ``attrs["ome"]`` of an RGB image group with ``n_levels`` levels."""
    return {
        "version": NGFF_VERSION,
        "multiscales": multiscales(name, IMAGE_AXES, n_levels),
        "omero": {
            "channels": [
                {
                    "label": label,
                    "color": color,
                    "active": True,
                    "window": {"min": 0, "max": 255, "start": 0, "end": 255},
                }
                for label, color in RGB_CHANNELS
            ],
            "rdefs": {"model": "color"},
        },
    }


MASK_COLORS = ({"label-value": 1, "rgba": LABEL_RGBA},)


def label_attrs(
    name: str,
    n_levels: int,
    *,
    source: str | None = "../../",
    colors: Sequence[dict] = MASK_COLORS,
    properties: Sequence[dict] = (),
    downsampling: str = "2x2 max",
) -> dict:
    """Return the ``attrs["ome"]`` of an image-label group of ``n_levels`` ``(y, x)`` levels.

    ``source``: ``image-label.source.image``, the path of the labelled image
    group relative to this one (NGFF's default ``"../../"``: the image whose
    ``labels`` group holds it; see :func:`relative_source`); None names no
    image. ``colors``: the ``image-label.colors`` (default: value 1, a mask's
    foreground, in :data:`LABEL_RGBA`). ``properties``: the ``image-label.properties``
    (``{"label-value": v, ...}`` per value; none if empty). ``downsampling``: the multiscale's
    ``type``, how each level was reduced from the one before.
    """
    label_levels = multiscales(name, LABEL_AXES, n_levels)
    label_levels[0]["type"] = downsampling
    image_label: dict = {"colors": list(colors)}
    if properties:
        image_label["properties"] = list(properties)
    if source is not None:
        image_label["source"] = {"image": source}
    return {"version": NGFF_VERSION, "multiscales": label_levels, "image-label": image_label}


def relative_source(label_image: str | os.PathLike, image: str | os.PathLike) -> str:
    """Return the ``image-label.source.image`` of the label image group at ``label_image`` for the image
    group at ``image``: the '/'-separated path from one to the other, e.g. ``"../../../slides/s1.zarr"``.

    Both are taken with symlinks resolved (as a local reader follows ``..``);
    ``label_image`` need not exist yet.
    """
    start, target = os.path.realpath(label_image), os.path.realpath(image)
    return Path(os.path.relpath(target, start)).as_posix()


def create_image(
    group: zarr.Group, shapes: list[tuple[int, int]], *, chunk: int, name: str, pool: Executor
) -> PyramidWriter:
    """Create image levels of ``shapes`` (``(height, width)``, level 0 first) in ``group``.

    Returns their writer (writing with ``pool``), which takes level-0
    ``(3, rows, width)`` uint8 bands.
    """
    arrays = [
        group.create_array(
            str(level),
            shape=(3, h, w),
            chunks=(3, chunk, chunk),
            dtype=np.uint8,
            compressors=CODEC,
            fill_value=0,
            dimension_names=["c", "y", "x"],
        )
        for level, (h, w) in enumerate(shapes)
    ]
    group.attrs["ome"] = image_attrs(name, len(shapes))
    return PyramidWriter(arrays, mean_2x2, pool=pool)


def create_labels(
    group: zarr.Group, name: str, shapes: list[tuple[int, int]], *, chunk: int, pool: Executor
) -> PyramidWriter:
    """Create ``labels/{name}`` in a slide store ``group`` and list it; return its writer.

    See :func:`create_label_levels` for what the writer takes.
    """
    labels = group.require_group("labels")
    list_label(labels, name)
    return create_label_levels(labels.create_group(name, overwrite=True), shapes, chunk=chunk, name=name, pool=pool)


def list_label(labels: zarr.Group, name: str) -> None:
    """Add ``name`` to the ``labels`` group's NGFF list of label images."""
    listed = labels.attrs.get("ome", {}).get("labels", [])
    labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": sorted({*listed, name})}


def create_mask_array(group: zarr.Group, name: str, shape: tuple[int, int], chunk: int) -> zarr.Array:
    """Create the empty ``(y, x)`` uint8 array ``name`` in ``group``: ``chunk`` x ``chunk`` chunks in the
    writer's codec, fill 0, all-zero chunks not stored (masks and probabilities)."""
    return group.create_array(
        name,
        shape=shape,
        chunks=(chunk, chunk),
        dtype=np.uint8,
        compressors=CODEC,
        fill_value=0,
        dimension_names=["y", "x"],
        config={"write_empty_chunks": False},
    )


def create_label_levels(
    label_group: zarr.Group,
    shapes: list[tuple[int, int]],
    *,
    chunk: int,
    name: str,
    pool: Executor,
    source: str | None = "../../",
) -> PyramidWriter:
    """Create the levels of one label image (a 0/1 mask) of ``shapes`` in ``label_group``.

    Returns their writer (writing with ``pool``), which takes level-0
    ``(rows, width)`` uint8 0/1 bands; each level is the 2x2 maximum of the
    one before. Chunks that stay all zero are not stored. ``source``: the
    labelled image, see :func:`label_attrs`.
    """
    arrays = [create_mask_array(label_group, str(level), shape, chunk) for level, shape in enumerate(shapes)]
    label_group.attrs["ome"] = label_attrs(name, len(shapes), source=source)
    return PyramidWriter(arrays, max_2x2, pool=pool, skip_empty=True)


def set_pixel_size(group: zarr.Group, y_um: float, x_um: float) -> None:
    """Put the level-0 pixel size in micrometres into the NGFF metadata of ``group`` and of its label images.

    Each multiscale's space axes get ``"unit": "micrometer"`` and the scale
    of level ``l`` becomes ``2**l`` times the pixel size, so viewers
    (napari, QuPath) show micrometres.
    """
    groups = [group]
    if "labels" in group:
        groups += [group["labels"][name] for name in group["labels"].attrs.get("ome", {}).get("labels", [])]
    for target in groups:
        ome = dict(target.attrs["ome"])
        for multiscale in ome["multiscales"]:
            space = [i for i, axis in enumerate(multiscale["axes"]) if axis["type"] == "space"]
            for index in space:
                multiscale["axes"][index] = {**multiscale["axes"][index], "unit": "micrometer"}
            size = dict(zip(space, (y_um, x_um)[-len(space) :], strict=True))
            for dataset in multiscale["datasets"]:
                for transform in dataset["coordinateTransformations"]:
                    if transform["type"] == "scale":
                        level_scale = transform["scale"]
                        transform["scale"] = [
                            level_scale[i] * size[i] if i in size else level_scale[i] for i in range(len(level_scale))
                        ]
        target.attrs["ome"] = ome
