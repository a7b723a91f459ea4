"""Read access to a slide store: ``results/slides/{id}.zarr`` (OME-Zarr, NGFF 0.5).

Layout (a public contract, DESIGN section 3)::

    {id}.zarr/                 group, attrs["ome"]["multiscales"] (axes c, y, x; scales in micrometres),
                               attrs["tilepipe"]["pixel_size"] = {x_um, y_um, source}
        0, 1, 2, ...           image levels, (c, y, x) uint8, each 2x smaller in y and x
        labels/                group, attrs["ome"]["labels"] = ["glomeruli"]
            glomeruli/0        (y, x) uint8 0/1 mask at level-0 resolution

A label store (pseudo-labels, :mod:`tilepipe.inference.pseudo`) is one such
label image at its own root: levels ``0, 1, ...`` and NGFF
``image-label`` metadata naming its slide store.

Windows are addressed in level-0 pixels ``(y, x)`` and zero-filled where
they pass the slide's border, as the training tiles of the recipe are.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from tilepipe.errors import InputError
from tilepipe.io.pixel_size import PixelSize
from tilepipe.stores.chunks import fast_view
from tilepipe.stores.ngff import set_pixel_size

LABEL_NAME = "glomeruli"
LABEL_PATH = f"labels/{LABEL_NAME}/0"


class SlideStore:
    """One slide store opened read-only.

    Cheap to construct; zarr arrays are opened on first use, so a store can
    be created in the parent process and used in DataLoader workers.
    ``labels_path`` takes the labels from another store instead: a label
    store (a label image at its root, as pseudo-labels are,
    :mod:`tilepipe.inference.pseudo`) or a store with ``labels/glomeruli``.
    """

    def __init__(self, path: str | os.PathLike, labels_path: str | os.PathLike | None = None):
        self.path = Path(path)
        self.labels_path = None if labels_path is None else Path(labels_path)
        for store in (self.path, self.labels_path):
            if store is not None and not store.is_dir():
                raise InputError(store, "slide store does not exist")

    @cached_property
    def group(self) -> zarr.Group:
        try:
            return zarr.open_group(self.path, mode="r")
        except Exception as err:
            raise InputError(self.path, f"not a readable zarr group ({err})") from err

    def copy_pixel_size_to(self, group: zarr.Group) -> None:
        """Give the multiscales of ``group`` (a label store of this slide) the slide's recorded pixel size, if any."""
        if self.group.attrs.get("tilepipe", {}).get("pixel_size") is not None:
            size = self.pixel_size(assumed_um=0.0)
            set_pixel_size(group, size.y_um, size.x_um)

    def pixel_size(self, assumed_um: float) -> PixelSize:
        """The level-0 pixel size ingest recorded (``attrs["tilepipe"]["pixel_size"]``), in micrometres.

        Stores written before pixel sizes were recorded get ``assumed_um``
        (``data.mpp``), and the source says so.
        """
        recorded = self.group.attrs.get("tilepipe", {}).get("pixel_size")
        if recorded is None:
            return PixelSize(assumed_um, assumed_um, f"not recorded in the store; assumed data.mpp = {assumed_um}")
        return PixelSize(float(recorded["x_um"]), float(recorded["y_um"]), str(recorded["source"]))

    @cached_property
    def multiscale(self) -> dict:
        """The NGFF ``multiscales[0]`` dict of the image."""
        try:
            return self.group.attrs["ome"]["multiscales"][0]
        except (KeyError, IndexError) as err:
            raise InputError(self.path, "no OME-NGFF multiscales metadata") from err

    @cached_property
    def levels(self) -> list[zarr.Array]:
        """Image arrays, level 0 first; each ``(c, y, x)`` uint8."""
        return [self.group[d["path"]] for d in self.multiscale["datasets"]]

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 ``(height, width)`` in pixels."""
        _, h, w = self.levels[0].shape
        return int(h), int(w)

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of ``level`` in pixels."""
        _, h, w = self.levels[level].shape
        return int(h), int(w)

    @property
    def level_shapes(self) -> list[tuple[int, int]]:
        """``(height, width)`` in pixels of every level, level 0 first."""
        return [self.level_shape(level) for level in range(len(self.levels))]

    @cached_property
    def labels(self) -> zarr.Array | None:
        """The ``(y, x)`` uint8 glomerulus mask at level 0, or None if unlabeled."""
        if self.labels_path is None:
            group, path = self.group, LABEL_PATH
        else:
            group = zarr.open_group(self.labels_path, mode="r")
            path = label_image_path(group) or LABEL_PATH
        try:
            labels = group[path]
        except KeyError:
            if self.labels_path is not None:
                raise InputError(
                    self.labels_path, f"neither a label image at its root nor a {LABEL_PATH} array"
                ) from None
            return None
        if labels.shape != self.shape:
            raise InputError(
                self.labels_path or self.path, f"labels shape {labels.shape} differs from the image's {self.shape}"
            )
        return labels

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @cached_property
    def _image_views(self) -> list:
        return [fast_view(level) for level in self.levels]

    @cached_property
    def _label_view(self):
        return None if self.labels is None else fast_view(self.labels)

    def read_image(self, y: int, x: int, height: int, width: int, level: int = 0) -> np.ndarray:
        """Return the ``(c, height, width)`` uint8 window at ``(y, x)`` of ``level``.

        Coordinates and sizes are in pixels of ``level``; pixels outside the
        slide are 0.
        """
        return read_window(self._image_views[level], y, x, height, width)

    def read_labels(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return the ``(height, width)`` uint8 mask window at level-0 ``(y, x)``.

        All zeros for an unlabeled slide; pixels outside the slide are 0.
        """
        if self._label_view is None:
            return np.zeros((height, width), dtype=np.uint8)
        return read_window(self._label_view, y, x, height, width)


def label_image_path(group: zarr.Group) -> str | None:
    """Return the path of level 0 of the label image that ``group`` is (NGFF ``image-label`` and
    ``multiscales`` in its attrs["ome"]), or None if ``group`` is not a label image."""
    ome = group.attrs.get("ome", {})
    try:
        return ome["multiscales"][0]["datasets"][0]["path"] if "image-label" in ome else None
    except (KeyError, IndexError, TypeError):
        return None


def read_window(array, y: int, x: int, height: int, width: int) -> np.ndarray:
    """Read ``array[..., y:y+height, x:x+width]``, zero-filled past the borders.

    ``array`` is any array-like with ``(..., y, x)`` axes (zarr, numpy).
    Returns a new numpy array of shape ``(..., height, width)``.
    """
    *lead, h, w = array.shape
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + height, h), min(x + width, w)
    if (y0, x0, y1, x1) == (y, x, y + height, x + width):  # inside: no zero frame to fill
        window = array[..., y0:y1, x0:x1]
        return window if isinstance(window, np.ndarray) and window.flags.owndata else np.array(window)
    out = np.zeros((*lead, height, width), dtype=array.dtype)
    if y1 > y0 and x1 > x0:
        out[..., y0 - y : y1 - y, x0 - x : x1 - x] = array[..., y0:y1, x0:x1]
    return out
