"""Glomerulus polygons: read and write the Kaggle JSON, rasterize mask windows.

File format (HuBMAP / QuPath export): a JSON list of GeoJSON-like Features
(a ``FeatureCollection`` object is accepted too). ``geometry.type`` is
``Polygon`` or ``MultiPolygon``; coordinates are level-0 pixels, x right,
y down, floats allowed; ``properties.classification.name`` is the class.

Pixel convention (cv2's ``fillPoly`` with ``LINE_8`` and a fixed-point
``shift``): the point ``(x, y)`` is the centre of pixel ``(y, x)``. Each
vertex is rounded to 1/256 px, then to the nearest pixel (.5 rounds up);
the ring through these whole-pixel vertices is filled by cv2's scanline
rule (row ``y`` crosses the edges whose end rows satisfy
``top <= y < bottom``, at x kept in 1/65536 px, and is set from the first
crossing rounded up to the second rounded down, the third to the fourth,
...), and cv2's 8-connected line between consecutive vertices is set too.
So the square with corners (10, 10) and (20, 20) covers rows and columns
10..20, and the one with corners (10.6, 10.6) and (19.4, 19.4) covers
11..19. Holes are rasterized the same way and cleared from their own
polygon only; polygons are combined with OR, so overlapping polygons never
cancel out (one ``fillPoly`` call for several would XOR them). One
departure from cv2: it steps x by a slope truncated to 1/65536 px, which
drifts by a pixel or more along an edge 65536 rows tall or taller; such an
edge (only a polygon reaching far past a slide has one) is crossed at its
exact x, so its pixels stay within a pixel of the geometry.

A polygon sets pixels only in its ``box`` (the box of its whole-pixel
vertices), and its pixels in a window never depend on the window, so a
slide can be rasterized in bands. cv2 must see a polygon whole: where it
clips a ring to its canvas it moves the ring's edges. A polygon whose box
is no larger than the window (and less than 65536 rows tall) is therefore
filled by cv2 on a canvas of its box; any other (an outline reaching far
past the slide) is filled on its part of the window only, by
:func:`_scan`, which does cv2's integer arithmetic in numpy
(``tests/io/test_polygons.py`` checks that both agree pixel for pixel).
Clipping the ring geometrically first would not be exact: a cut edge has
other rounded end points, so other pixels.

Coordinates must be finite and within +-2**29 px (the scan's int64
arithmetic is exact up to there); :func:`load_polygons` given the slide's
size also refuses vertices beyond 100 times the slide's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError

__all__ = ["FAR_FACTOR", "MAX_COORDINATE", "Polygon", "load_polygons", "rasterize", "write_polygons"]

MAX_COORDINATE = 2**29  # px; no polygon coordinate may lie further from 0
FAR_FACTOR = 100  # load_polygons(size=...) refuses vertices beyond this many times the slide's size
_SUBPIXEL_BITS = 8  # vertices are rounded to 1/256 px first (cv2's fixed point with shift=8)
_X_BITS = 16  # fractional bits of the x positions in cv2's scanline fill (its XY_SHIFT)
_LONG_EDGE_ROWS = 1 << _X_BITS  # edges this tall or taller get exact crossings (see _spans)


@dataclass(frozen=True, eq=False)
class Polygon:
    """One polygon in level-0 pixels.

    ``exterior`` is an ``(n, 2)`` float64 array of ``(x, y)`` vertices (ring
    not closed: the last vertex is not a copy of the first); ``holes`` are
    rings of the same form. ``bounds`` is ``(x_min, y_min, x_max, y_max)``
    of the exterior, in pixels. ``pixels`` are the rings (exterior first)
    with their vertices rounded to whole pixels, ``(n, 2)`` int64 ``(x, y)``:
    what :func:`rasterize` draws. ``box`` is ``(left, top, right, bottom)``,
    ends exclusive: the bounding box of all rings' whole-pixel vertices, in
    which lies every pixel the polygon sets. Raises ValueError for a ring that is
    not ``(n >= 3, 2)`` or has a coordinate that is not finite or lies
    beyond :data:`MAX_COORDINATE`.
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    bounds: tuple[float, float, float, float] = field(init=False)
    pixels: tuple[np.ndarray, ...] = field(init=False, repr=False)
    box: tuple[int, int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        exterior = _frozen_ring(self.exterior)
        holes = tuple(_frozen_ring(h) for h in self.holes)
        lo = exterior.min(axis=0)
        hi = exterior.max(axis=0)
        pixels = tuple(_whole_pixels(ring) for ring in (exterior, *holes))
        every = np.concatenate(pixels)
        left, top = (int(v) for v in every.min(axis=0))
        right, bottom = (int(v) + 1 for v in every.max(axis=0))
        object.__setattr__(self, "exterior", exterior)
        object.__setattr__(self, "holes", holes)
        object.__setattr__(self, "bounds", (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))
        object.__setattr__(self, "pixels", pixels)
        object.__setattr__(self, "box", (left, top, right, bottom))


def _frozen_ring(ring: Any) -> np.ndarray:
    array = np.array(ring, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 3:
        raise ValueError(f"a ring must be an (n >= 3, 2) array of (x, y), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("ring coordinates must be finite")
    if np.abs(array).max() > MAX_COORDINATE:
        raise ValueError(f"ring coordinates must lie within +-{MAX_COORDINATE} px, got {np.abs(array).max():g}")
    array.setflags(write=False)
    return array


def _whole_pixels(ring: np.ndarray) -> np.ndarray:
    """Return ``ring``'s vertices rounded to 1/256 px, then to whole pixels (.5 up): ``(n, 2)`` int64 ``(x, y)``."""
    fixed = np.round(ring * (1 << _SUBPIXEL_BITS)).astype(np.int64)
    pixels = (fixed + (1 << (_SUBPIXEL_BITS - 1))) >> _SUBPIXEL_BITS
    pixels.setflags(write=False)
    return pixels


def load_polygons(
    path: str | os.PathLike, class_name: str = "glomerulus", size: tuple[int, int] | None = None
) -> list[Polygon]:
    """Read the polygons of class ``class_name`` (case-insensitive) from ``path``.

    Features without a classification count as ``class_name``. A
    MultiPolygon becomes one :class:`Polygon` per part. Returns them in file
    order. ``size`` is the slide's ``(height, width)`` in level-0 pixels,
    when known. Raises :class:`InputError` naming ``path`` and the feature
    (index, and id when it has one) for bad JSON, a wrong structure, an
    unknown geometry type, non-numeric or non-finite coordinates, rings with
    fewer than 3 points, and vertices beyond +-:data:`MAX_COORDINATE` or,
    with ``size``, beyond :data:`FAR_FACTOR` times the slide's height (y) or
    width (x) from its origin.
    """
    limits = _limits(size)
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
        if feature.get("id") is not None:
            where = f"{where} (id {feature['id']!r})"
        if _class_of(feature, path, where).casefold() not in ("", wanted):
            continue
        polygons.extend(_polygons_of(feature.get("geometry"), path, where, limits))
    return polygons


def _limits(size: tuple[int, int] | None) -> tuple[float, float, str]:
    """Return ``(x_limit, y_limit, why)``: the largest ``|x|`` and ``|y|`` a vertex may have, and why."""
    if size is None:
        return MAX_COORDINATE, MAX_COORDINATE, f"+-{MAX_COORDINATE} px, the most any slide could need"
    height, width = size
    why = f"{FAR_FACTOR} times the slide's size ({height} x {width} px, height x width)"
    return min(FAR_FACTOR * width, MAX_COORDINATE), min(FAR_FACTOR * height, MAX_COORDINATE), why


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


def _polygons_of(geometry: Any, path: str | os.PathLike, where: str, limits: tuple[float, float, str]) -> list[Polygon]:
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
        rings = [_ring(ring, path, f"{part_where} ring {r}", limits) for r, ring in enumerate(part)]
        polygons.append(Polygon(rings[0], tuple(rings[1:])))
    return polygons


def _ring(ring: Any, path: str | os.PathLike, where: str, limits: tuple[float, float, str]) -> np.ndarray:
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
    x_limit, y_limit, why = limits
    far = (np.abs(xy[:, 0]) > x_limit) | (np.abs(xy[:, 1]) > y_limit)
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise InputError(path, f"{where} point {i}: {ring[i]!r} lies beyond {why}; not a position on the slide")
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    if len(xy) < 3:
        raise InputError(path, f"{where}: a ring needs at least 3 distinct points, got {len(xy)}")
    return xy


def rasterize(polygons: Iterable[Polygon], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return rows ``y0:y1``, columns ``x0:x1`` (level-0 pixels) of the polygons' mask.

    Result: ``(y1 - y0, x1 - x0)`` uint8 0/1, C-contiguous. Any window gives
    exactly the same pixels as the matching slice of a larger window, so a
    slide can be rasterized in bands. Polygons whose box misses the window
    cost one comparison. Memory beyond the result, per polygon: its box when
    that is no larger than the window, else a few bytes per pixel of the
    part of the window its box covers, however far its vertices lie.
    """
    if y1 < y0 or x1 < x0:
        raise ValueError(f"empty or inverted window rows {y0}:{y1}, cols {x0}:{x1}")
    window = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for polygon in polygons:
        left, top, right, bottom = polygon.box
        cy0, cy1 = max(y0, top), min(y1, bottom)
        cx0, cx1 = max(x0, left), min(x1, right)
        if cy0 >= cy1 or cx0 >= cx1:
            continue
        if (bottom - top) * (right - left) <= window.size and bottom - top < _LONG_EDGE_ROWS:
            part = _fill(polygon)[cy0 - top : cy1 - top, cx0 - left : cx1 - left]
        else:
            part = _scan(polygon, cy0, cy1, cx0, cx1)
        window[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] |= part
    return window


def _fill(polygon: Polygon) -> np.ndarray:
    """Return the polygon's mask over its ``box``, ``(bottom - top, right - left)`` uint8 0/1, drawn by cv2."""
    left, top, right, bottom = polygon.box
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    origin = np.array([left, top], dtype=np.int64)
    exterior, *holes = (np.ascontiguousarray(ring - origin, dtype=np.int32) for ring in polygon.pixels)
    cv2.fillPoly(canvas, [exterior], 1, lineType=cv2.LINE_8)
    for hole in holes:
        cv2.fillPoly(canvas, [hole], 0, lineType=cv2.LINE_8)
    return canvas


def _scan(polygon: Polygon, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return rows ``y0:y1``, columns ``x0:x1`` of the polygon's mask, uint8 0/1, computed on that window only.

    The pixels are :func:`_fill`'s (cv2's), but for the exact crossings of edges 65536 rows tall or taller.
    """
    exterior, *holes = polygon.pixels
    inside = _covered(exterior, y0, y1, x0, x1)
    for hole in holes:
        inside &= ~_covered(hole, y0, y1, x0, x1)
    return inside.view(np.uint8)


def _covered(ring: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return the ``(y1 - y0, x1 - x0)`` bool mask of the pixels ``cv2.fillPoly`` sets for one whole-pixel ring."""
    start, end = np.roll(ring, 1, axis=0), ring  # edge i runs from vertex i - 1 to vertex i
    rows, first, last = _spans(start, end, y0, y1)
    first, last = np.maximum(first, x0), np.minimum(last, x1 - 1)
    keep = first <= last
    rows, first, last = rows[keep] - y0, first[keep] - x0, last[keep] - x0
    steps = np.zeros((y1 - y0, x1 - x0 + 1), dtype=np.int8)  # +1 where a span starts, -1 after it ends
    np.add.at(steps, (rows, first), 1)
    np.add.at(steps, (rows, last + 1), -1)
    covered = np.cumsum(steps, axis=1, out=steps)[:, :-1] > 0
    ys, xs = _outline(start, end, y0, y1, x0, x1)
    covered[ys - y0, xs - x0] = True
    return covered


def _spans(start: np.ndarray, end: np.ndarray, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(rows, first, last)``: the pixel runs cv2's scanline fill sets in rows ``y0:y1`` (columns inclusive).

    cv2 keeps each edge's x in 1/65536 px: it starts at the upper vertex and
    grows on each row by the slope truncated to 1/65536 px; a row is set
    from every odd crossing rounded up to the next crossing rounded down. On
    an edge of :data:`_LONG_EDGE_ROWS` rows or more that truncation would
    drift by a pixel or more, so there x is the exact crossing rounded down
    to 1/65536 px instead. Within :data:`MAX_COORDINATE` every product stays
    below 2**61 (``down * spare`` is below ``rise**2``).
    """
    moving = start[:, 1] != end[:, 1]
    a, b = start[moving], end[moving]
    downward = (a[:, 1] < b[:, 1])[:, None]
    upper, lower = np.where(downward, a, b), np.where(downward, b, a)
    top = np.maximum(upper[:, 1], y0)
    counts = np.maximum(np.minimum(lower[:, 1], y1) - top, 0)
    run = (lower[:, 0] - upper[:, 0]) << _X_BITS
    rise = lower[:, 1] - upper[:, 1]
    long = rise >= _LONG_EDGE_ROWS
    slope, spare = np.divmod(run, rise)  # exact slope = slope + spare / rise (1/65536 px per row)
    truncated = np.sign(run) * (np.abs(run) // rise)  # cv2's: C's division truncates towards zero
    slope, spare = np.where(long, slope, truncated), np.where(long, spare, 0)
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = top[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts)
    down = rows - upper[edge, 1]
    xs = (upper[edge, 0] << _X_BITS) + down * slope[edge] + down * spare[edge] // rise[edge]
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # A closed ring crosses every row an even number of times, so pairs never straddle two rows.
    return rows[0::2], (xs[0::2] + (1 << _X_BITS) - 1) >> _X_BITS, xs[1::2] >> _X_BITS


def _outline(start: np.ndarray, end: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(ys, xs)``: the pixels in rows ``y0:y1``, columns ``x0:x1`` of cv2's 8-connected lines along the edges.

    cv2 draws each line from its left end (its first vertex when vertical),
    one pixel per step along the longer axis; after ``k`` steps the shorter
    axis has moved ``(2 * minor * k + major - 1) // (2 * major)`` pixels
    (Bresenham with cv2's ties). Only the steps inside the window are made.
    """
    backwards = (end[:, 0] < start[:, 0])[:, None]
    a, b = np.where(backwards, end, start), np.where(backwards, start, end)
    run = b[:, 0] - a[:, 0]
    rise = np.abs(b[:, 1] - a[:, 1])
    down = np.where(b[:, 1] < a[:, 1], -1, 1)
    steep = rise > run
    major, minor = np.maximum(run, rise), np.minimum(run, rise)
    # Steps k = 0..major move along x (right) or, when steep, along y (in the direction `down`).
    origin = np.where(steep, a[:, 1], a[:, 0])
    direction = np.where(steep, down, 1)
    low, high = np.where(steep, y0, x0), np.where(steep, y1, x1)
    k_first = np.where(direction > 0, low - origin, origin - high + 1)
    k_stop = np.where(direction > 0, high - origin, origin - low + 1)
    k_first, k_stop = np.maximum(k_first, 0), np.minimum(k_stop, major + 1)
    counts = np.maximum(k_stop - k_first, 0)
    edge = np.repeat(np.arange(len(counts)), counts)
    k = k_first[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts)
    moved = (2 * minor[edge] * k + np.maximum(major[edge] - 1, 0)) // np.maximum(2 * major[edge], 1)
    along, across = k, moved * np.where(steep, 1, down)[edge]
    is_steep = steep[edge]
    xs = a[edge, 0] + np.where(is_steep, across, along)
    ys = a[edge, 1] + np.where(is_steep, along * down[edge], across)
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return ys[inside], xs[inside]


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
