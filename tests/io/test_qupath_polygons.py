"""Polygons as QuPath writes them: FeatureCollections, classes, holes, and the pixel-edge convention.

The round trip: a mask -> tilepipe's QuPath GeoJSON (exact pixel-edge
outlines, tilepipe.objects.export) -> load_polygons -> rasterize gives the
mask back exactly.
"""

import json
import logging
import tracemalloc

import cv2
import numpy as np
import pytest

from tilepipe.io.polygons import Polygon, load_polygons, rasterize, write_polygons
from tilepipe.objects.export import write_objects


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def qupath_feature(rings, kind="Polygon", classification="glomerulus", object_type="annotation", **extra):
    """A Feature as QuPath 0.4+ exports it; ``classification`` None leaves the class out."""
    properties = {"objectType": object_type, **extra}
    if isinstance(classification, str):
        properties["classification"] = {"name": classification, "color": [255, 0, 0]}
    elif classification is not None:
        properties["classification"] = classification
    return {"type": "Feature", "id": "0b1f", "geometry": {"type": kind, "coordinates": rings}, "properties": properties}


def collection(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def dump(tmp_path, document, name="slide.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def centres_inside(ring, height, width):
    """Pixel centres strictly inside ``ring`` by the even-odd rule, computed in floats: ``(height, width)`` bool."""
    ring = np.asarray(ring, dtype=np.float64)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    inside = np.zeros((height, width), dtype=bool)
    for (ax, ay), (bx, by) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < at)
    return inside


def blob_masks(rng, count):
    """Random masks with holes, separate pieces and pieces touching only at corners."""
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(24, 160, 2))
        noise = cv2.GaussianBlur(rng.random((height, width)), (0, 0), float(rng.uniform(0.7, 3.0)))
        yield (noise > np.quantile(noise, rng.uniform(0.25, 0.85))).astype(np.uint8)


# ---------------------------------------------------------------- reading QuPath files


def test_feature_collections_of_annotations_and_detections_with_holes_and_multipolygons(tmp_path):
    path = dump(
        tmp_path,
        collection(
            qupath_feature([square(0, 0, 20, 20), square(5, 5, 10, 10)]),
            qupath_feature(
                [[square(30, 0, 40, 10)], [square(50, 0, 60, 10)]], kind="MultiPolygon", object_type="detection"
            ),
        ),
    )
    polygons = load_polygons(path)
    assert [p.convention for p in polygons] == ["edges"] * 3
    mask = rasterize(polygons, 0, 24, 0, 64)
    expected = np.zeros((24, 64), np.uint8)
    expected[0:20, 0:20] = 1
    expected[5:10, 5:10] = 0  # the hole is not drawn
    expected[0:10, 30:40] = expected[0:10, 50:60] = 1
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize(
    "classification",
    [
        "glomerulus",
        "Glomeruli",
        {"name": "GLOMERULUS", "colorRGB": -3140401},  # QuPath 0.2 (and Kaggle)
        {"names": ["Glomerulus", "Sclerotic"], "color": [0, 0, 255]},  # a derived class, QuPath 0.4+
        {"name": "Glomerulus: Sclerotic"},
    ],
)
def test_glomerulus_classes_in_every_layout_are_drawn(tmp_path, classification, caplog):
    feature = qupath_feature([square(0, 0, 4, 4)], classification=None)
    feature["properties"]["classification"] = classification
    with caplog.at_level(logging.WARNING):
        assert len(load_polygons(dump(tmp_path, collection(feature)))) == 1
    assert not caplog.records


def test_other_classes_are_skipped_and_unclassified_features_drawn_with_one_warning(tmp_path, caplog):
    path = dump(
        tmp_path,
        collection(
            qupath_feature([square(0, 0, 100, 100)], classification="Tissue"),
            qupath_feature([square(0, 0, 100, 50)], classification={"name": "Cortex", "color": [0, 255, 0]}),
            qupath_feature([square(10, 10, 20, 20)], classification="Cortex"),
            qupath_feature([square(30, 30, 40, 40)], classification="glomerulus"),
            qupath_feature([square(50, 50, 60, 60)], classification=None),
            qupath_feature([square(70, 70, 80, 80)], classification={"name": None, "color": None}),
            qupath_feature([square(80, 0, 90, 10)], object_type="detection") | {"properties": {"classification": None}},
        ),
    )
    with caplog.at_level(logging.WARNING, logger="tilepipe.io.polygons"):
        polygons = load_polygons(path)
    assert [p.bounds[:2] for p in polygons] == [(30, 30), (50, 50), (70, 70), (80, 0)]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(path) in message and "3 of 4 features drawn have no classification" in message


def test_a_file_with_no_glomerulus_warns_that_its_mask_is_empty(tmp_path, caplog):
    path = dump(tmp_path, collection(qupath_feature([square(0, 0, 9, 9)], classification="Tissue")))
    with caplog.at_level(logging.WARNING, logger="tilepipe.io.polygons"):
        assert load_polygons(path) == []
    assert "no feature is classified as glomeruli/glomerulus (found 'Tissue' x1)" in caplog.text


def test_points_and_lines_are_skipped_with_a_warning_and_collections_read_member_by_member(tmp_path, caplog):
    path = dump(
        tmp_path,
        collection(
            qupath_feature([3, 4], kind="Point", classification=None),
            qupath_feature([[0, 0], [9, 9]], kind="LineString"),
            {
                "type": "Feature",
                "geometry": {
                    "type": "GeometryCollection",
                    "geometries": [
                        {"type": "Point", "coordinates": [1, 1]},
                        {"type": "Polygon", "coordinates": [square(0, 0, 2, 2)]},
                    ],
                },
                "properties": {"classification": {"name": "glomerulus"}},
            },
        ),
    )
    with caplog.at_level(logging.WARNING, logger="tilepipe.io.polygons"):
        polygons = load_polygons(path)
    assert [p.bounds for p in polygons] == [(0, 0, 2, 2)]
    assert "2 point or line features have no area" in caplog.text


def test_child_objects_are_read(tmp_path):
    child = qupath_feature([square(10, 10, 20, 20)])
    tissue = qupath_feature([square(0, 0, 50, 50)], classification="Tissue", childObjects=[child])
    polygons = load_polygons(dump(tmp_path, collection(tissue)))
    assert [p.bounds for p in polygons] == [(10, 10, 20, 20)]


# ---------------------------------------------------------------- the two conventions


@pytest.mark.parametrize(
    ("corners", "first", "last"),
    [
        ((10, 10, 20, 20), 10, 19),  # pixel edges: the 10 x 10 pixels between them
        ((10.4, 10.4, 19.6, 19.6), 10, 19),  # every pixel whose centre is inside
        ((10.6, 10.6, 19.4, 19.4), 11, 18),
        ((10.5, 10.5, 19.5, 19.5), 10, 18),  # centres on the outline: in at left and top, out at right and bottom
    ],
)
def test_edges_convention_sets_the_pixels_whose_centres_are_inside(corners, first, last):
    polygon = Polygon(np.array(square(*corners)[:-1], dtype=float), convention="edges")
    expected = np.zeros((32, 32), np.uint8)
    expected[first : last + 1, first : last + 1] = 1
    assert np.array_equal(rasterize([polygon], 0, 32, 0, 32), expected)
    assert polygon.box == (first, first, last + 1, last + 1)


def test_auto_convention_follows_the_files_form_and_can_be_overridden(tmp_path):
    features = [qupath_feature([square(10, 10, 20, 20)])]
    bare, fc = dump(tmp_path, features, "kaggle.json"), dump(tmp_path, collection(*features), "qupath.geojson")
    assert rasterize(load_polygons(bare), 0, 32, 0, 32).sum() == 11 * 11  # Kaggle: cv2, outline included
    assert rasterize(load_polygons(fc), 0, 32, 0, 32).sum() == 10 * 10
    assert rasterize(load_polygons(bare, convention="edges"), 0, 32, 0, 32).sum() == 10 * 10
    assert rasterize(load_polygons(fc, convention="centres"), 0, 32, 0, 32).sum() == 11 * 11
    with pytest.raises(ValueError, match="convention"):
        load_polygons(bare, convention="corners")
    with pytest.raises(ValueError, match="convention"):
        Polygon([[0, 0], [1, 0], [0, 1]], convention="corners")


def test_edges_match_a_float_even_odd_reference_on_random_polygons():
    rng = np.random.default_rng(5)
    size = 96
    for _ in range(60):
        ring = rng.uniform(-20, size + 20, (int(rng.integers(3, 30)), 2))  # concave, self-intersecting
        expected = centres_inside(np.round(ring * 256) / 256, size, size)
        assert np.array_equal(rasterize([Polygon(ring, convention="edges")], 0, size, 0, size), expected)


def test_edges_windows_tile_the_full_raster_and_holes_clear_their_own_polygon_only():
    rng = np.random.default_rng(9)
    height, width = 200, 260
    polygons = []
    for _ in range(25):
        centre = rng.uniform([-30, -30], [width + 30, height + 30])
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 30))))
        radius = rng.uniform(3, 70, len(angles))
        ring = centre + radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        polygons.append(Polygon(ring, holes=((centre + (ring - centre) * 0.4),), convention="edges"))
    full = rasterize(polygons, 0, height, 0, width)
    bands = np.concatenate([rasterize(polygons, y, min(y + 23, height), 0, width) for y in range(0, height, 23)])
    assert np.array_equal(bands, full)
    for _ in range(20):
        y0, y1 = np.sort(rng.integers(0, height + 1, 2))
        x0, x1 = np.sort(rng.integers(0, width + 1, 2))
        assert np.array_equal(rasterize(polygons, int(y0), int(y1), int(x0), int(x1)), full[y0:y1, x0:x1])
    island = Polygon(np.array(square(15, 15, 25, 25)[:-1], float), convention="edges")
    ring = Polygon(np.array(square(0, 0, 40, 40)[:-1], float), (np.array(square(10, 10, 30, 30)[:-1], float),), "edges")
    mask = rasterize([ring, island], 0, 40, 0, 40)
    assert mask.sum() == 40 * 40 - 20 * 20 + 10 * 10


@pytest.mark.parametrize("far", [1e7, 5e8])  # beyond 4.2 M px: Python integers instead of int64
def test_edges_far_vertices_give_the_clipped_mask_in_bounded_memory(far):
    height, width = 300, 520
    polygon = Polygon([[50.3, 40.2], [far, 40.2], [far, 60.7], [50.3, 60.7]], convention="edges")
    tracemalloc.start()
    try:
        mask = rasterize([polygon], 0, height, 0, width)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = np.zeros((height, width), np.uint8)
    expected[40:61, 50:] = 1  # centres 40.5..60.5 and 50.5.. are inside
    assert np.array_equal(mask, expected)
    assert peak < 4 * height * width
    sliver = Polygon([[60.4, 30.2], [far, 45.6], [60.4, 75.9]], convention="edges")
    assert np.array_equal(rasterize([sliver], 0, height, 0, width), centres_inside(sliver.exterior, height, width))


def test_write_then_load_keeps_the_convention(tmp_path):
    outline = np.array([[1.25, 2.5], [30.75, 4.0], [12.0, 28.5]])
    write_polygons(tmp_path / "edges.geojson", [Polygon(outline, convention="edges")])
    document = json.loads((tmp_path / "edges.geojson").read_text())
    assert document["type"] == "FeatureCollection"
    assert document["features"][0]["properties"]["objectType"] == "annotation"
    (back,) = load_polygons(tmp_path / "edges.geojson")
    assert back.convention == "edges" and np.array_equal(back.exterior, outline)
    write_polygons(tmp_path / "centres.json", [Polygon(outline)])
    assert isinstance(json.loads((tmp_path / "centres.json").read_text()), list)
    assert load_polygons(tmp_path / "centres.json")[0].convention == "centres"
    with pytest.raises(ValueError, match="one file"):
        write_polygons(tmp_path / "mixed.json", [Polygon(outline), Polygon(outline, convention="edges")])


# ---------------------------------------------------------------- the round trip


def test_tilepipe_geojson_read_back_gives_the_mask_exactly(tmp_path):
    rng = np.random.default_rng(2)
    diagonal = np.zeros((6, 6), np.uint8)
    diagonal[1, 1] = diagonal[2, 2] = diagonal[2, 4] = diagonal[3, 3] = 1  # pieces touching only at corners
    masks = [diagonal, *blob_masks(rng, 40)]
    multipolygons = 0
    for index, mask in enumerate(masks):
        geojson = tmp_path / f"{index}.geojson"
        write_objects(mask * 255, 128, geojson, tmp_path / f"{index}.csv", slide_id="s", mpp=0.5, min_area=0)
        multipolygons += '"MultiPolygon"' in geojson.read_text()
        height, width = mask.shape
        polygons = load_polygons(geojson, size=mask.shape)
        assert np.array_equal(rasterize(polygons, 0, height, 0, width), mask), f"mask {index}"
        bands = [rasterize(polygons, y, min(y + 16, height), 0, width) for y in range(0, height, 16)]
        assert np.array_equal(np.concatenate(bands), mask)
    assert multipolygons, "no mask exercised the MultiPolygon outlines"


def test_round_trip_at_level0_offsets_of_a_large_slide(tmp_path):
    # Objects far from the origin: the exported coordinates are large integers, read back exactly.
    mask = next(blob_masks(np.random.default_rng(4), 1))
    height, width = mask.shape
    slide = np.zeros((height + 1000, width + 38_000), np.uint8)
    slide[1000:, 38_000:] = mask * 255
    write_objects(slide, 128, tmp_path / "s.geojson", tmp_path / "s.csv", slide_id="s", mpp=0.5, min_area=0)
    polygons = load_polygons(tmp_path / "s.geojson")
    assert np.array_equal(rasterize(polygons, 1000, 1000 + height, 38_000, 38_000 + width), mask)
