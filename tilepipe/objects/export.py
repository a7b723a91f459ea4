"""A slide's glomeruli for people: a QuPath GeoJSON of outlines and a table of measurements, one row per object.

Objects are the 8-connected components of the thresholded probability
(:mod:`tilepipe.objects.components`). Each outline is the exact pixel-edge
boundary of the object's pixels (``rasterio.features.shapes``), holes kept,
in level-0 pixel coordinates (x right, y down; pixel ``(y, x)`` is the unit
square from ``(x, y)`` to ``(x + 1, y + 1)``), so its area equals the pixel
count. The GeoJSON is a FeatureCollection as QuPath imports and exports it:
``properties.objectType`` ``"detection"``, ``properties.classification``
``{"name", "color"}`` and ``properties.measurements`` (name -> value).
Features are written one at a time; memory holds one object's box, and
an object whose box exceeds :data:`MAX_BOX_PIXELS` (a false positive over
half a slide) is outlined on every ``step``-th pixel instead (its
measurements stay exact but for the perimeter; the row says the step).
"""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import shapes

from tilepipe.atomic import atomic_output
from tilepipe.objects.components import SlideObjects, find_objects, object_mask
from tilepipe.stores.ngff import GLOMERULUS_RGB

__all__ = ["TABLE_COLUMNS", "UNCERTAIN_SPREAD", "measured_objects", "outline", "write_objects"]

MAX_BOX_PIXELS = 32 * 2**20
# A pixel is uncertain where the ensemble's spread 2 sigma reaches 0.5 (stored 0..255): its models x flips
# runs disagree as much as runs half at 0.25 and half at 0.75 would.
UNCERTAIN_SPREAD = 128
# uuid5 namespace of feature ids: the same slide and object always get the same id.
_NAMESPACE = uuid.UUID("5f0c2a1e-7d3b-4e8f-9a41-3c6d2b7e9f10")
TABLE_COLUMNS = [
    "slide",
    "object",
    "id",
    "y0",
    "x0",
    "y1",
    "x1",
    "centroid_x",
    "centroid_y",
    "area_px",
    "area_um2",
    "perimeter_px",
    "perimeter_um",
    "equivalent_diameter_um",
    "mean_probability",
    "mean_uncertainty",
    "uncertain_fraction",
    "outline_step",
]


def outline(mask: np.ndarray, x0: int, y0: int) -> dict[str, Any]:
    """Return the GeoJSON geometry of the pixels set in ``mask`` ``(y, x)`` placed at level-0 ``(x0, y0)``.

    A ``Polygon`` (exterior, then holes), or a ``MultiPolygon`` of its
    4-connected pieces where an 8-connected object's pixels touch only at
    corners (a single ring through such a corner would cross itself, which
    QuPath's JTS and shapely call invalid); coordinates are level-0 pixel
    edges as integers.
    """
    pieces = [
        [[[int(x), int(y)] for x, y in ring] for ring in geometry["coordinates"]]
        for geometry, _ in shapes(
            mask.astype(np.uint8), mask=mask.astype(bool), connectivity=4, transform=Affine.translation(x0, y0)
        )
    ]
    if len(pieces) == 1:
        return {"type": "Polygon", "coordinates": pieces[0]}
    return {"type": "MultiPolygon", "coordinates": pieces}


def _placed(geometry: dict[str, Any], x0: int, y0: int, step: int) -> dict[str, Any]:
    """``geometry`` with window coordinates ``c`` moved to level-0 ``(x0 + step * x, y0 + step * y)``."""

    def move(rings):
        return [[[x0 + step * x, y0 + step * y] for x, y in ring] for ring in rings]

    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": move(geometry["coordinates"])}
    return {"type": "MultiPolygon", "coordinates": [move(polygon) for polygon in geometry["coordinates"]]}


def _boundary_length(geometry: dict[str, Any]) -> float:
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    total = 0.0
    for polygon in polygons:
        for ring in polygon:
            xy = np.asarray(ring, dtype=np.float64)
            total += float(np.hypot(*np.diff(xy, axis=0).T).sum())
    return total


def measured_objects(
    values: np.ndarray,
    cutoff: int,
    *,
    slide_id: str,
    mpp: float,
    min_area: int,
    uncertainty: np.ndarray | None = None,
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(geometry, row)`` per object of ``values >= cutoff`` with at least ``min_area`` pixels.

    ``values``: the ``(y, x)`` uint8 probability (``round(p * 255)``);
    ``uncertainty``: an optional ``(y, x)`` uint8 spread map of the same
    shape (``round(min(2 sigma, 1) * 255)``, :mod:`tilepipe.inference.ensemble`).
    ``mpp``: micrometres per level-0 pixel. Rows have the
    :data:`TABLE_COLUMNS`; lengths in pixels and micrometres, areas in
    pixels and square micrometres, probabilities and spreads in 0..1,
    ``uncertain_fraction`` the share of the object's pixels whose spread
    reaches :data:`UNCERTAIN_SPREAD` (empty without a spread map).
    """
    objects: SlideObjects = find_objects(
        values, cutoff, extra=uncertainty, extra_cutoff=UNCERTAIN_SPREAD, min_area=min_area
    )
    for index in range(len(objects)):
        y0, x0, y1, x1 = (int(v) for v in objects.box[index])
        step = 1
        while (y1 - y0) * (x1 - x0) > MAX_BOX_PIXELS * step * step:
            step *= 2
        if step == 1:
            mask = object_mask(values, cutoff, objects.box[index], objects.seed[index])
        else:  # every step-th pixel of the box; neighbours that intrude are kept
            mask = (np.asarray(values[y0:y1:step, x0:x1:step]) >= cutoff).astype(np.uint8)
        geometry = outline(mask, 0, 0)
        geometry = _placed(geometry, x0, y0, step)
        area = int(objects.area[index])
        ys, xs = np.nonzero(mask)
        perimeter = _boundary_length(geometry)
        row = {
            "slide": slide_id,
            "object": index + 1,
            "id": str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{index + 1}")),
            "y0": y0,
            "x0": x0,
            "y1": y1,
            "x1": x1,
            "centroid_x": round(x0 + step * (float(xs.mean()) + 0.5), 2),
            "centroid_y": round(y0 + step * (float(ys.mean()) + 0.5), 2),
            "area_px": area,
            "area_um2": round(area * mpp * mpp, 3),
            "perimeter_px": round(perimeter, 3),
            "perimeter_um": round(perimeter * mpp, 3),
            "equivalent_diameter_um": round(2 * math.sqrt(area / math.pi) * mpp, 3),
            "mean_probability": round(float(objects.value_sum[index]) / area / 255, 4),
            "mean_uncertainty": (
                round(float(objects.extra_sum[index]) / area / 255, 4) if uncertainty is not None else None
            ),
            "uncertain_fraction": (
                round(float(objects.extra_high[index]) / area, 4) if uncertainty is not None else None
            ),
            "outline_step": step,
        }
        yield geometry, row


def _feature(geometry: dict[str, Any], row: dict[str, Any], class_name: str) -> dict[str, Any]:
    measurements = {
        "Area px": row["area_px"],
        "Area µm^2": row["area_um2"],
        "Perimeter px": row["perimeter_px"],
        "Perimeter µm": row["perimeter_um"],
        "Equivalent diameter µm": row["equivalent_diameter_um"],
        "Mean probability": row["mean_probability"],
    }
    if row["mean_uncertainty"] is not None:
        measurements["Mean uncertainty"] = row["mean_uncertainty"]
        measurements["Uncertain fraction"] = row["uncertain_fraction"]
    return {
        "type": "Feature",
        "id": row["id"],
        "geometry": geometry,
        "properties": {
            "objectType": "detection",
            "classification": {"name": class_name, "color": list(GLOMERULUS_RGB)},
            "measurements": measurements,
        },
    }


def write_objects(
    values: np.ndarray,
    cutoff: int,
    geojson_path: str | os.PathLike,
    table_path: str | os.PathLike,
    *,
    slide_id: str,
    mpp: float,
    min_area: int,
    uncertainty: np.ndarray | None = None,
    class_name: str = "glomerulus",
) -> list[dict[str, Any]]:
    """Write the objects of ``values >= cutoff`` as a QuPath GeoJSON and a CSV table; return the table's rows.

    Arguments as :func:`measured_objects`. Both files appear atomically; an
    empty slide gives an empty FeatureCollection and a header-only table.
    """
    rows = []
    with (
        atomic_output(Path(geojson_path)) as geojson_tmp,
        atomic_output(Path(table_path)) as table_tmp,
        open(geojson_tmp, "w", encoding="utf-8") as geojson,
        open(table_tmp, "w", newline="", encoding="utf-8") as table,
    ):
        writer = csv.DictWriter(table, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        geojson.write('{"type": "FeatureCollection", "features": [')
        for geometry, row in measured_objects(
            values, cutoff, slide_id=slide_id, mpp=mpp, min_area=min_area, uncertainty=uncertainty
        ):
            geojson.write(("\n" if not rows else ",\n") + json.dumps(_feature(geometry, row, class_name)))
            writer.writerow(row)
            rows.append(row)
        geojson.write("\n]}\n")
    return rows
