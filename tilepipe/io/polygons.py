"""Glomerulus polygons: read Kaggle and QuPath GeoJSON, write them, rasterize mask windows.

File format: GeoJSON Features, either a bare JSON list of them (the Kaggle
HuBMAP files, QuPath 0.2's export) or a ``FeatureCollection`` (QuPath 0.3+
and :mod:`tilepipe.objects.export`). ``geometry.type`` is ``Polygon`` or
``MultiPolygon`` (a ``GeometryCollection`` is read member by member);
coordinates are level-0 pixels, x right, y down, floats allowed; interior
rings are holes. The class is ``properties.classification``: QuPath's
``{"name": ..., "color": ...}``, ``{"names": [...]}`` (a derived class),
the older ``{"name": ..., "colorRGB": ...}``, or a plain string;
``properties.objectType`` (annotation, detection, ...) does not matter, and
QuPath's ``properties.childObjects`` are read too. Features of the
glomerulus classes (:data:`GLOMERULUS_CLASSES`, case-insensitive, also as
the base of a derived class such as ``"Glomerulus: sclerotic"``) are drawn;
features of any other class ("Tissue", "Cortex", ...) are not; features
without a class are drawn and counted, with one warning naming the file.
Points and lines carry no area: they are skipped, with a warning.

Two pixel conventions (``convention`` of :func:`load_polygons`, config
``ingest.polygon_coordinates``):

- ``"centres"`` (Kaggle; what the HuBMAP teams did with these files:
  ``cv2.fillPoly`` on the raw coordinates): the point ``(x, y)`` is the
  centre of pixel ``(y, x)``, and the outline's pixels are set too. The
  default for a bare list, so Kaggle's (and the demo's) masks are cv2's.
- ``"edges"`` (QuPath, and tilepipe's own GeoJSON): pixel ``(y, x)`` is the
  square from ``(x, y)`` to ``(x + 1, y + 1)``, and is set when its centre
  ``(x + 0.5, y + 0.5)`` lies inside the polygon (the even-odd rule; a
  centre exactly on an outline counts on left and top edges, not on right
  and bottom ones). So an exact pixel-edge outline (QuPath's "create
  annotation from pixels", :func:`tilepipe.objects.export.outline`) gives
  back exactly its pixels. The default for a ``FeatureCollection``.

*Centres*, pixel for pixel as cv2's ``fillPoly`` with ``LINE_8`` and a
fixed-point ``shift``: each vertex is rounded to 1/256 px, then to the
nearest pixel (.5 rounds up); the ring through these whole-pixel vertices
is filled by cv2's scanline rule (row ``y`` crosses the edges whose end
rows satisfy ``top <= y < bottom``, at x kept in 1/65536 px, and is set
from the first crossing rounded up to the second rounded down, the third to
the fourth, ...), and cv2's 8-connected line between consecutive vertices
is set too. So the square with corners (10, 10) and (20, 20) covers rows
and columns 10..20 (11 x 11 pixels; as *edges* it covers 10..19), and the
one with corners (10.6, 10.6) and (19.4, 19.4) covers 11..19. One departure
from cv2: it steps x by a slope truncated to 1/65536 px, which drifts by a
pixel or more along an edge 65536 rows tall or taller; such an edge (only a
polygon reaching far past a slide has one) is crossed at its exact x, so its
pixels stay within a pixel of the geometry.

*Edges*: vertices are rounded to 1/256 px; row ``y`` is sampled at
``y + 0.5``, crossing the edges whose end points satisfy
``top <= y + 0.5 < bottom``; each crossing ``X`` (an exact fraction) starts
or ends the run at the first pixel whose centre is at or right of ``X``.
Integer arithmetic throughout, so the result has no rounding ties to break.

In both conventions holes are rasterized like their polygon and cleared
from it only; polygons are combined with OR, so overlapping polygons never
cancel out (one ``fillPoly`` call for several would XOR them). A polygon
sets pixels only in its ``box``, and its pixels in a window never depend on
the window, so a slide can be rasterized in bands. cv2 must see a polygon
whole: where it clips a ring to its canvas it moves the ring's edges. A
*centres* polygon whose box is no larger than the window (and less than
65536 rows tall) is therefore filled by cv2 on a canvas of its box; any
other (an outline reaching far past the slide) is filled on its part of the
window only, by :func:`_scan`, which does cv2's integer arithmetic in numpy
(``tests/io/test_polygons.py`` checks that both agree pixel for pixel).
*Edges* polygons are always sampled on their part of the window only.

Coordinates must be finite and within +-2**29 px (the scans' integer
arithmetic is exact up to there); :func:`load_polygons` given the slide's
size also refuses vertices beyond 100 times the slide's size.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError

__all__ = [
    "CONVENTIONS",
    "FAR_FACTOR",
    "GLOMERULUS_CLASSES",
    "MAX_COORDINATE",
    "Polygon",
    "load_polygons",
    "rasterize",
    "write_polygons",
]

log = logging.getLogger(__name__)

MAX_COORDINATE = 2**29  # px; no polygon coordinate may lie further from 0
FAR_FACTOR = 100  # load_polygons(size=...) refuses vertices beyond this many times the slide's size
CONVENTIONS = ("centres", "edges")
GLOMERULUS_CLASSES = ("glomerulus", "glomeruli")
_SUBPIXEL_BITS = 8  # vertices are rounded to 1/256 px first (cv2's fixed point with shift=8)
_UNIT = 1 << _SUBPIXEL_BITS  # fixed-point units per pixel
_HALF = _UNIT // 2  # a pixel centre's offset from its top-left corner, fixed point
_X_BITS = 16  # fractional bits of the x positions in cv2's scanline fill (its XY_SHIFT)
_LONG_EDGE_ROWS = 1 << _X_BITS  # edges this tall or taller get exact crossings (see _spans)
_INT64_SAFE = 1 << 30  # fixed-point magnitudes below this keep _sample's products within int64
_AREAS = ("Polygon", "MultiPolygon")
_NO_AREA = ("Point", "MultiPoint", "LineString", "MultiLineString")


@dataclass(frozen=True, eq=False)
class Polygon:
    """One polygon in level-0 pixels, and the pixel convention its coordinates are in.

    ``exterior`` is an ``(n, 2)`` float64 array of ``(x, y)`` vertices (ring
    not closed: the last vertex is not a copy of the first); ``holes`` are
    rings of the same form. ``convention`` is ``"centres"`` (cv2, Kaggle) or
    ``"edges"`` (QuPath; see the module docstring). ``bounds`` is
    ``(x_min, y_min, x_max, y_max)`` of the exterior, in pixels. ``fixed``
    are the rings (exterior first) in 1/256 px, ``(n, 2)`` int64 ``(x, y)``;
    ``pixels`` the same rounded to whole pixels: what cv2 draws for
    *centres*. ``box`` is ``(left, top, right, bottom)``, ends exclusive, in
    which lies every pixel the polygon sets (*centres*: the box of all
    rings' whole-pixel vertices; *edges*: the pixels whose centres lie in
    the exterior's bounds). Raises ValueError for a ring that is not
    ``(n >= 3, 2)`` or has a coordinate that is not finite or lies beyond
    :data:`MAX_COORDINATE`, and for an unknown convention.
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    convention: str = "centres"
    bounds: tuple[float, float, float, float] = field(init=False)
    fixed: tuple[np.ndarray, ...] = field(init=False, repr=False)
    pixels: tuple[np.ndarray, ...] = field(init=False, repr=False)
    box: tuple[int, int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {self.convention!r}")
        exterior = _frozen_ring(self.exterior)
        holes = tuple(_frozen_ring(h) for h in self.holes)
        lo = exterior.min(axis=0)
        hi = exterior.max(axis=0)
        fixed = tuple(_fixed_point(ring) for ring in (exterior, *holes))
        pixels = tuple(_whole_pixels(ring) for ring in fixed)
        if self.convention == "centres":
            every = np.concatenate(pixels)
            left, top = (int(v) for v in every.min(axis=0))
            right, bottom = (int(v) + 1 for v in every.max(axis=0))
        else:  # the first pixel whose centre is at or past each end of the exterior's bounds
            left, top = (_first_centre_at(int(v)) for v in fixed[0].min(axis=0))
            right, bottom = (_first_centre_at(int(v)) for v in fixed[0].max(axis=0))
        object.__setattr__(self, "exterior", exterior)
        object.__setattr__(self, "holes", holes)
        object.__setattr__(self, "bounds", (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))
        object.__setattr__(self, "fixed", fixed)
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


def _fixed_point(ring: np.ndarray) -> np.ndarray:
    """Return ``ring``'s vertices rounded to 1/256 px, in those units: ``(n, 2)`` int64 ``(x, y)``."""
    fixed = np.round(ring * _UNIT).astype(np.int64)
    fixed.setflags(write=False)
    return fixed


def _whole_pixels(fixed: np.ndarray) -> np.ndarray:
    """Return fixed-point vertices rounded to whole pixels (.5 up): ``(n, 2)`` int64 ``(x, y)``."""
    pixels = (fixed + _HALF) >> _SUBPIXEL_BITS
    pixels.setflags(write=False)
    return pixels


def _first_centre_at(position: int) -> int:
    """Return the first pixel index whose centre (``index + 0.5`` px) is at or past ``position`` (1/256 px)."""
    return -((_HALF - position) // _UNIT)


def load_polygons(
    path: str | os.PathLike,
    classes: Iterable[str] = GLOMERULUS_CLASSES,
    size: tuple[int, int] | None = None,
    convention: str = "auto",
) -> list[Polygon]:
    """Read the polygons to draw from ``path``: features of ``classes`` (case-insensitive) and unclassified ones.

    Returns them in file order (a feature's ``childObjects`` after it), a
    MultiPolygon as one :class:`Polygon` per part. ``size`` is the slide's
    ``(height, width)`` in level-0 pixels, when known. ``convention``:
    ``"centres"``, ``"edges"`` or ``"auto"`` (edges for a
    ``FeatureCollection``, centres for a bare list of features; see the
    module docstring). Logs one warning naming the file when features
    without a class were drawn (with their count), when point or line
    features were skipped, and when features exist but none is drawn.

    Raises :class:`InputError` naming ``path`` and the feature (index, and
    id when it has one) for bad JSON, a wrong structure, a classification
    that is neither an object nor a string, an unknown geometry type,
    non-numeric or non-finite coordinates, rings with fewer than 3 points,
    and vertices beyond +-:data:`MAX_COORDINATE` or, with ``size``, beyond
    :data:`FAR_FACTOR` times the slide's height (y) or width (x) from its
    origin.
    """
    if convention not in ("auto", *CONVENTIONS):
        raise ValueError(f"convention must be auto or one of {', '.join(CONVENTIONS)}, got {convention!r}")
    limits = _limits(size)
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    collection = isinstance(document, dict) and document.get("type") == "FeatureCollection"
    features = document.get("features") if collection else document
    if not isinstance(features, list):
        raise InputError(path, "expected a JSON list of Features (or a FeatureCollection)")
    if convention == "auto":
        convention = "edges" if collection else "centres"
    wanted = {name.casefold() for name in classes}
    polygons: list[Polygon] = []
    unclassified = no_area = drawn = 0
    skipped: Counter[str] = Counter()
    for where, feature in _walk(features, path):
        name = _class_of(feature, path, where)
        if name is not None and not _is_wanted(name, wanted):
            skipped[name] += 1
            continue
        parts = _polygons_of(feature.get("geometry"), path, where, limits, convention)
        if parts is None:
            no_area += 1
            continue
        polygons.extend(parts)
        drawn += 1
        unclassified += name is None
    if unclassified:
        log.warning(
            "%s: %d of %d features drawn have no classification; they are drawn as %s",
            path,
            unclassified,
            drawn,
            "/".join(sorted(wanted)),
        )
    if no_area:
        log.warning("%s: %d point or line features have no area; they are not drawn", path, no_area)
    if skipped:
        classes_seen = ", ".join(f"{name!r} x{count}" for name, count in sorted(skipped.items()))
        if drawn:
            log.info("%s: not drawn, other classes: %s", path, classes_seen)
        else:
            log.warning(
                "%s: no feature is classified as %s (found %s); the mask is empty",
                path,
                "/".join(sorted(wanted)),
                classes_seen,
            )
    return polygons


def _walk(features: list, path: str | os.PathLike, prefix: str = "feature") -> Iterator[tuple[str, dict]]:
    """Yield ``(where, feature)`` for ``features`` and, after each, its QuPath ``properties.childObjects``."""
    for index, feature in enumerate(features):
        where = f"{prefix} {index}"
        if not isinstance(feature, dict):
            raise InputError(path, f"{where}: expected an object, got {type(feature).__name__}")
        if feature.get("id") is not None:
            where = f"{where} (id {feature['id']!r})"
        yield where, feature
        properties = feature.get("properties")
        children = properties.get("childObjects") if isinstance(properties, dict) else None
        if children is not None:
            if not isinstance(children, list):
                raise InputError(path, f"{where}: properties.childObjects must be a list")
            yield from _walk(children, path, f"{where} child")


def _limits(size: tuple[int, int] | None) -> tuple[float, float, str]:
    """Return ``(x_limit, y_limit, why)``: the largest ``|x|`` and ``|y|`` a vertex may have, and why."""
    if size is None:
        return MAX_COORDINATE, MAX_COORDINATE, f"+-{MAX_COORDINATE} px, the most any slide could need"
    height, width = size
    why = f"{FAR_FACTOR} times the slide's size ({height} x {width} px, height x width)"
    return min(FAR_FACTOR * width, MAX_COORDINATE), min(FAR_FACTOR * height, MAX_COORDINATE), why


def _class_of(feature: dict, path: str | os.PathLike, where: str) -> str | None:
    """Return the feature's class name (a derived class as ``"Base: sub"``), or None when it has none."""
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise InputError(path, f"{where}: properties must be an object")
    classification = properties.get("classification")
    if classification is None or isinstance(classification, str):
        return classification or None
    if not isinstance(classification, dict):
        raise InputError(path, f"{where}: properties.classification must be an object or a string")
    if "names" in classification and "name" not in classification:  # QuPath's derived classes
        names = classification["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(path, f"{where}: properties.classification.names must be a list of strings")
        return ": ".join(names) or None
    name = classification.get("name")
    if name is not None and not isinstance(name, str):
        raise InputError(path, f"{where}: properties.classification.name must be a string, got {name!r}")
    return name or None


def _is_wanted(name: str, wanted: set[str]) -> bool:
    """True if ``name`` or its base class (before the first ":") is one of ``wanted`` (casefolded)."""
    return name.strip().casefold() in wanted or name.split(":")[0].strip().casefold() in wanted


def _polygons_of(
    geometry: Any, path: str | os.PathLike, where: str, limits: tuple[float, float, str], convention: str
) -> list[Polygon] | None:
    """Return the polygons of ``geometry``, or None when it has no area (points, lines)."""
    if not isinstance(geometry, dict):
        raise InputError(path, f"{where}: missing geometry object")
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise InputError(path, f"{where}: GeometryCollection geometries must be a list")
        found = [
            _polygons_of(member, path, f"{where} geometry {i}", limits, convention) for i, member in enumerate(members)
        ]
        areas = [polygon for polygons in found if polygons is not None for polygon in polygons]
        return areas or None
    if kind in _NO_AREA:
        return None
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        parts = [coordinates]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list):
            raise InputError(path, f"{where}: MultiPolygon coordinates must be a list of polygons")
        parts = coordinates
    else:
        raise InputError(
            path, f"{where}: unsupported geometry type {kind!r} (expected Polygon, MultiPolygon, a point or a line)"
        )
    polygons = []
    for part_index, part in enumerate(parts):
        part_where = where if kind == "Polygon" else f"{where} part {part_index}"
        if not isinstance(part, list) or not part:
            raise InputError(path, f"{part_where}: polygon coordinates must be a non-empty list of rings")
        rings = [_ring(ring, path, f"{part_where} ring {r}", limits) for r, ring in enumerate(part)]
        polygons.append(Polygon(rings[0], tuple(rings[1:]), convention))
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
    """Return rows ``y0:y1``, columns ``x0:x1`` (level-0 pixels) of the polygons' mask, each in its convention.

    Result: ``(y1 - y0, x1 - x0)`` uint8 0/1, C-contiguous. Any window gives
    exactly the same pixels as the matching slice of a larger window, so a
    slide can be rasterized in bands. Polygons whose box misses the window
    cost one comparison. Memory beyond the result, per polygon: its box when
    it is a *centres* polygon whose box is no larger than the window, else a
    few bytes per pixel of the part of the window its box covers, however
    far its vertices lie.
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
        if polygon.convention == "edges":
            part = _sample(polygon, cy0, cy1, cx0, cx1)
        elif (bottom - top) * (right - left) <= window.size and bottom - top < _LONG_EDGE_ROWS:
            part = _fill(polygon)[cy0 - top : cy1 - top, cx0 - left : cx1 - left]
        else:
            part = _scan(polygon, cy0, cy1, cx0, cx1)
        window[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] |= part
    return window


def _sample(polygon: Polygon, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return rows ``y0:y1``, columns ``x0:x1`` of an *edges* polygon's mask: pixels whose centres lie inside."""
    return _exterior_minus_holes(polygon.fixed, _centres_inside, y0, y1, x0, x1)


def _exterior_minus_holes(rings: list[np.ndarray], inside_of, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return ``inside_of(exterior)`` less each ``inside_of(hole)`` over rows ``y0:y1``, columns ``x0:x1``, uint8 0/1."""
    exterior, *holes = rings
    inside = inside_of(exterior, y0, y1, x0, x1)
    for hole in holes:
        inside &= ~inside_of(hole, y0, y1, x0, x1)
    return inside.view(np.uint8)


def _runs(rows: np.ndarray, starts: np.ndarray, stops: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return the ``shape`` bool mask set on columns ``starts[i]:stops[i]`` of row ``rows[i]`` (window coordinates)."""
    steps = np.zeros((shape[0], shape[1] + 1), dtype=np.int8)  # +1 where a run starts, -1 where it stops
    np.add.at(steps, (rows, starts), 1)
    np.add.at(steps, (rows, stops), -1)
    return np.cumsum(steps, axis=1, out=steps)[:, :-1] > 0


def _centres_inside(ring: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return the ``(y1 - y0, x1 - x0)`` bool mask of the pixel centres inside the fixed-point ``ring`` (even-odd).

    Row ``y`` is sampled at ``Y = y + 0.5`` px; an edge from ``(xa, ya)`` to
    ``(xb, yb)`` is crossed where ``min(ya, yb) <= Y < max(ya, yb)``, at
    ``X = N / D`` (1/256 px, exact), and the crossing toggles every pixel
    from ``k = ceil(X - 0.5)`` on (the first whose centre is at or right of
    ``X``). Sorting the integers ``k`` of a row and pairing them gives its
    runs, with no ties to break. Products stay within int64 while the
    ring's fixed-point coordinates are below :data:`_INT64_SAFE` (4.2 M px);
    a ring reaching further is computed with Python integers.
    """
    start, end = np.roll(ring, 1, axis=0), ring
    moving = start[:, 1] != end[:, 1]
    a, b = start[moving], end[moving]
    if int(np.abs(ring).max(initial=0)) >= _INT64_SAFE:
        a, b = a.astype(object), b.astype(object)
    downward = (a[:, 1] < b[:, 1])[:, None]
    upper, lower = np.where(downward, a, b), np.where(downward, b, a)
    first = (-((_HALF - upper[:, 1]) // _UNIT)).astype(np.int64)  # _first_centre_at, elementwise
    stop = (-((_HALF - lower[:, 1]) // _UNIT)).astype(np.int64)
    first, stop = np.maximum(first, y0), np.minimum(stop, y1)
    counts = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = first[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts)
    rise = lower[edge, 1] - upper[edge, 1]  # D > 0
    below = rows.astype(upper.dtype) * _UNIT + _HALF - upper[edge, 1]  # 0 <= below < D
    numerator = upper[edge, 0] * rise + below * (lower[edge, 0] - upper[edge, 0])  # X = numerator / D
    ks = np.asarray(-((_HALF * rise - numerator) // (_UNIT * rise)), dtype=np.int64).reshape(-1)
    order = np.lexsort((ks, rows))
    rows, ks = rows[order], ks[order]
    # A closed ring crosses every row an even number of times, so pairs never straddle two rows.
    rows, starts, stops = rows[0::2] - y0, np.clip(ks[0::2], x0, x1) - x0, np.clip(ks[1::2], x0, x1) - x0
    keep = starts < stops
    return _runs(rows[keep], starts[keep], stops[keep], (y1 - y0, x1 - x0))


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
    return _exterior_minus_holes(polygon.pixels, _covered, y0, y1, x0, x1)


def _covered(ring: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return the ``(y1 - y0, x1 - x0)`` bool mask of the pixels ``cv2.fillPoly`` sets for one whole-pixel ring."""
    start, end = np.roll(ring, 1, axis=0), ring  # edge i runs from vertex i - 1 to vertex i
    rows, first, last = _spans(start, end, y0, y1)
    first, last = np.maximum(first, x0), np.minimum(last, x1 - 1)
    keep = first <= last
    covered = _runs(rows[keep] - y0, first[keep] - x0, last[keep] + 1 - x0, (y1 - y0, x1 - x0))
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
    """Write ``polygons`` to ``path`` as Polygon Features of class ``class_name``, in the form their convention reads back.

    *Centres* polygons are written as a bare JSON list (Kaggle's form),
    *edges* polygons as a QuPath ``FeatureCollection`` of annotations, so
    :func:`load_polygons` with ``convention="auto"`` reads them back in the
    same convention; mixing both raises ValueError. Rings are written closed
    (GeoJSON style); coordinates keep full float precision, so
    :func:`load_polygons` reads back the same vertices. The file appears
    atomically.
    """
    polygons = list(polygons)
    conventions = {polygon.convention for polygon in polygons}
    if len(conventions) > 1:
        raise ValueError("cannot write centres and edges polygons to one file: they are read back in one convention")
    edges = conventions == {"edges"}
    features = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {
                "type": "Polygon",
                "coordinates": [_closed(polygon.exterior)] + [_closed(hole) for hole in polygon.holes],
            },
            "properties": (
                {"objectType": "annotation", "classification": {"name": class_name}}
                if edges
                else {"classification": {"name": class_name}, "isLocked": False, "measurements": []}
            ),
        }
        for polygon in polygons
    ]
    if edges:
        for feature in features:
            del feature["id"]
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"type": "FeatureCollection", "features": features} if edges else features, f)
        f.write("\n")


def _closed(ring: np.ndarray) -> list[list[float]]:
    points = ring.tolist()
    return points + [points[0]]
