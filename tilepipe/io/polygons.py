"""Glomerulus polygons: read and write the Kaggle JSON, rasterize mask windows.

File format (HuBMAP / QuPath export): a JSON list of GeoJSON-like Features
(a ``FeatureCollection`` object is accepted too). ``geometry.type`` is
``Polygon`` or ``MultiPolygon``; coordinates are level-0 pixels, x right,
y down, floats allowed; ``properties.classification.name`` is the class.

Pixel convention (cv2's): the point ``(x, y)`` is the centre of pixel
``(y, x)``. A pixel is set when its centre lies inside the ring (float
coordinates are honoured to 1/256 px through cv2's fixed-point ``shift``)
and also when cv2's 8-connected outline of the ring, drawn between the
vertices rounded to the nearest pixel (.5 rounds up), passes through it.
So the square with corners (10, 10) and (20, 20) covers rows and columns
10..20, and the one with corners (10.6, 10.6) and (19.4, 19.4) covers
11..19. Holes are rasterized the same way and cleared from their own
polygon only; polygons are combined with OR, so overlapping polygons never
cancel out (one ``fillPoly`` call for several would XOR them).

Every polygon is filled on its own canvas covering its whole bounding box,
so cv2 never clips it: clipping moves cv2's outline pixels, and a window
would then differ from the same rows of a full-slide raster. A window
therefore costs the bounding-box area of each polygon it meets (glomeruli:
a few hundred pixels square); polygons it misses cost one comparison.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError

__all__ = ["Polygon", "load_polygons", "rasterize", "write_polygons"]

_SHIFT = 8  # fractional bits of the fixed-point coordinates given to cv2
_MARGIN = 1  # canvas pixels around a polygon's bounding box


@dataclass(frozen=True, eq=False)
class Polygon:
    """One polygon in level-0 pixels.

    ``exterior`` is an ``(n, 2)`` float64 array of ``(x, y)`` vertices (ring
    not closed: the last vertex is not a copy of the first); ``holes`` are
    rings of the same form. ``bounds`` is ``(x_min, y_min, x_max, y_max)``
    of the exterior, in pixels.
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    bounds: tuple[float, float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        exterior = _frozen_ring(self.exterior)
        holes = tuple(_frozen_ring(h) for h in self.holes)
        lo = exterior.min(axis=0)
        hi = exterior.max(axis=0)
        object.__setattr__(self, "exterior", exterior)
        object.__setattr__(self, "holes", holes)
        object.__setattr__(self, "bounds", (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))


def _frozen_ring(ring: Any) -> np.ndarray:
    array = np.array(ring, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 3:
        raise ValueError(f"a ring must be an (n >= 3, 2) array of (x, y), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("ring coordinates must be finite")
    array.setflags(write=False)
    return array


def load_polygons(path: str | os.PathLike, class_name: str = "glomerulus") -> list[Polygon]:
    """Read the polygons of class ``class_name`` (case-insensitive) from ``path``.

    Features without a classification count as ``class_name``. A
    MultiPolygon becomes one :class:`Polygon` per part. Returns them in file
    order. Raises :class:`InputError` naming ``path`` and the feature index
    for bad JSON, a wrong structure, an unknown geometry type, non-numeric
    or non-finite coordinates and rings with fewer than 3 points.
    """
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        document = document.get("features")
    if not isinstance(document, list):
        raise InputError(path, "expected a JSON list of Features (or a FeatureCollection)")
    wanted = class_name.casefold()
    polygons: list[Polygon] = []
    for index, feature in enumerate(document):
        where = f"feature {index}"
        if not isinstance(feature, dict):
            raise InputError(path, f"{where}: expected an object, got {type(feature).__name__}")
        if _class_of(feature, path, where).casefold() not in ("", wanted):
            continue
        polygons.extend(_polygons_of(feature.get("geometry"), path, where))
    return polygons


def _class_of(feature: dict, path: str | os.PathLike, where: str) -> str:
    """Return the feature's class name, or "" when it has none."""
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise InputError(path, f"{where}: properties must be an object")
    classification = properties.get("classification") or {}
    if not isinstance(classification, dict):
        raise InputError(path, f"{where}: properties.classification must be an object")
    name = classification.get("name", "")
    if not isinstance(name, str):
        raise InputError(path, f"{where}: properties.classification.name must be a string, got {name!r}")
    return name


def _polygons_of(geometry: Any, path: str | os.PathLike, where: str) -> list[Polygon]:
    if not isinstance(geometry, dict):
        raise InputError(path, f"{where}: missing geometry object")
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        parts = [coordinates]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list):
            raise InputError(path, f"{where}: MultiPolygon coordinates must be a list of polygons")
        parts = coordinates
    else:
        raise InputError(path, f"{where}: unsupported geometry type {kind!r} (expected Polygon or MultiPolygon)")
    polygons = []
    for part_index, part in enumerate(parts):
        part_where = where if kind == "Polygon" else f"{where} part {part_index}"
        if not isinstance(part, list) or not part:
            raise InputError(path, f"{part_where}: polygon coordinates must be a non-empty list of rings")
        rings = [_ring(ring, path, f"{part_where} ring {r}") for r, ring in enumerate(part)]
        polygons.append(Polygon(rings[0], tuple(rings[1:])))
    return polygons


def _ring(ring: Any, path: str | os.PathLike, where: str) -> np.ndarray:
    """Validate one ring of ``[x, y]`` (or ``[x, y, z]``) positions; return it unclosed, (n, 2)."""
    if not isinstance(ring, list):
        raise InputError(path, f"{where}: a ring must be a list of [x, y] positions")
    for i, position in enumerate(ring):
        if (
            not isinstance(position, list)
            or len(position) not in (2, 3)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in position)
        ):
            raise InputError(path, f"{where} point {i}: expected [x, y] numbers, got {position!r}")
    xy = np.array([position[:2] for position in ring], dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        i = int(np.flatnonzero(~np.isfinite(xy).all(axis=1))[0])
        raise InputError(path, f"{where} point {i}: coordinates must be finite, got {ring[i]!r}")
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    if len(xy) < 3:
        raise InputError(path, f"{where}: a ring needs at least 3 distinct points, got {len(xy)}")
    return xy


def rasterize(polygons: Iterable[Polygon], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return rows ``y0:y1``, columns ``x0:x1`` (level-0 pixels) of the polygons' mask.

    Result: ``(y1 - y0, x1 - x0)`` uint8 0/1, C-contiguous. Any window gives
    exactly the same pixels as the matching slice of a larger window, so a
    slide can be rasterized in bands. Polygons whose bounding box misses the
    window cost one comparison.
    """
    if y1 < y0 or x1 < x0:
        raise ValueError(f"empty or inverted window rows {y0}:{y1}, cols {x0}:{x1}")
    window = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for polygon in polygons:
        left, top, right, bottom = _canvas_box(polygon)
        if right <= x0 or left >= x1 or bottom <= y0 or top >= y1:
            continue
        canvas = _fill(polygon, left, top, right, bottom)
        cy0, cy1 = max(y0, top), min(y1, bottom)
        cx0, cx1 = max(x0, left), min(x1, right)
        window[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] |= canvas[cy0 - top : cy1 - top, cx0 - left : cx1 - left]
    return window


def _canvas_box(polygon: Polygon) -> tuple[int, int, int, int]:
    """Return ``(left, top, right, bottom)``: the pixel box (end exclusive) of a polygon's canvas."""
    x_min, y_min, x_max, y_max = polygon.bounds
    return (
        math.floor(x_min) - _MARGIN,
        math.floor(y_min) - _MARGIN,
        math.ceil(x_max) + _MARGIN + 1,
        math.ceil(y_max) + _MARGIN + 1,
    )


def _fill(polygon: Polygon, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """Fill one polygon on a ``(bottom - top, right - left)`` uint8 canvas whose pixel (0, 0) is (top, left)."""
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    origin = np.array([left, top], dtype=np.float64)

    def fixed(ring: np.ndarray) -> np.ndarray:
        return np.round((ring - origin) * (1 << _SHIFT)).astype(np.int32)

    cv2.fillPoly(canvas, [fixed(polygon.exterior)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    for hole in polygon.holes:
        cv2.fillPoly(canvas, [fixed(hole)], 0, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas


def write_polygons(path: str | os.PathLike, polygons: Iterable[Polygon], class_name: str = "glomerulus") -> None:
    """Write ``polygons`` to ``path`` as a JSON list of Polygon Features of class ``class_name``.

    Rings are written closed (GeoJSON style); coordinates keep full float
    precision, so :func:`load_polygons` reads back the same vertices. The
    file appears atomically.
    """
    features = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {
                "type": "Polygon",
                "coordinates": [_closed(polygon.exterior)] + [_closed(hole) for hole in polygon.holes],
            },
            "properties": {"classification": {"name": class_name}, "isLocked": False, "measurements": []},
        }
        for polygon in polygons
    ]
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(features, f)
        f.write("\n")


def _closed(ring: np.ndarray) -> list[list[float]]:
    points = ring.tolist()
    return points + [points[0]]
