"""Glomerulus polygons: JSON reading and writing, rasterization of mask windows."""

import json

import cv2
import numpy as np
import pytest

from tilepipe.errors import InputError
from tilepipe.io.polygons import Polygon, load_polygons, rasterize, write_polygons


def feature(coordinates, kind="Polygon", name="glomerulus"):
    properties = {} if name is None else {"classification": {"name": name, "colorRGB": -3140401}}
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates}, "properties": properties}


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def dump(tmp_path, document, name="slide.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def rect(x0, y0, x1, y1):
    return Polygon(np.array(square(x0, y0, x1, y1)[:-1], dtype=float))


def random_polygons(rng, count, height, width, max_radius=120.0):
    """Star-shaped (often concave) polygons scattered over and past a (height, width) canvas."""
    polygons = []
    for _ in range(count):
        n = int(rng.integers(3, 40))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(3, max_radius, n)
        cx, cy = rng.uniform(-60, width + 60), rng.uniform(-60, height + 60)
        polygons.append(Polygon(np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)))
    return polygons


# ---------------------------------------------------------------- reading


def test_load_keeps_glomeruli_and_splits_multipolygons(tmp_path):
    document = [
        feature([square(0, 0, 10, 10)]),
        feature([square(20, 20, 30, 30)], name="Cortex"),
        feature([[square(40, 40, 50, 50)], [square(60, 60, 70, 70), square(62, 62, 64, 64)]], kind="MultiPolygon"),
        feature([square(80, 80, 90, 90)], name="GLOMERULUS"),
        feature([[[1.5, 2.25, 0.0], [11.5, 2.25, 0.0], [6.0, 9.75, 0.0]]], name=None),
    ]
    polygons = load_polygons(dump(tmp_path, document))
    assert [p.exterior[0].tolist() for p in polygons] == [[0, 0], [40, 40], [60, 60], [80, 80], [1.5, 2.25]]
    assert all(p.exterior.shape == (4, 2) for p in polygons[:4])  # closing vertex dropped
    assert polygons[4].exterior.shape == (3, 2)  # z dropped, not closed in the file
    assert [len(p.holes) for p in polygons] == [0, 0, 1, 0, 0]
    assert polygons[2].holes[0].tolist() == [[62, 62], [64, 62], [64, 64], [62, 64]]
    assert polygons[0].exterior.dtype == np.float64
    assert polygons[2].bounds == (60.0, 60.0, 70.0, 70.0)


def test_load_other_class_and_feature_collection(tmp_path):
    collection = {"type": "FeatureCollection", "features": [feature([square(0, 0, 5, 5)], name="Medulla")]}
    path = dump(tmp_path, collection)
    assert load_polygons(path) == []
    assert len(load_polygons(path, classes=["medulla"])) == 1


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("[{", "not valid JSON"),
        ({"type": "Feature"}, "expected a JSON list"),
        ([feature([square(0, 0, 5, 5)]), 7], "feature 1: expected an object"),
        ([feature([square(0, 0, 5, 5)]), {"type": "Feature"}], "feature 1: missing geometry"),
        ([feature([[0, 0], [3, 3]], kind="Circle")], "feature 0: unsupported geometry type 'Circle'"),
        ([{"type": "Feature", "geometry": {"type": "GeometryCollection"}}], "feature 0: GeometryCollection geometries"),
        ([feature([square(0, 0, 5, 5)]) | {"properties": {"classification": 3}}], "feature 0: properties.classif"),
        ([feature([square(0, 0, 5, 5)]) | {"properties": {"classification": {"names": "a"}}}], "classification.names"),
        ([feature([square(0, 0, 5, 5)]) | {"properties": {"childObjects": {}}}], "feature 0: properties.childObjects"),
        ([feature([square(0, 0, 5, 5)]) | {"properties": {"childObjects": [3]}}], "feature 0 child 0: expected an obj"),
        ([feature([[[0, 0], [5, "5"], [0, 5]]])], "feature 0 ring 0 point 1: expected [x, y] numbers"),
        ([feature([[[0, 0], [5, True], [0, 5]]])], "feature 0 ring 0 point 1"),
        ([feature([[[0, 0], [5], [0, 5]]])], "feature 0 ring 0 point 1"),
        (
            '[{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, NaN], [0, 5]]]}}]',
            "point 1: coordinates must be finite",
        ),
        ('[{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 1e999], [0, 5]]]}}]', "must be finite"),
        ([feature([[[0, 0], [5, 5], [0, 0]]])], "feature 0 ring 0: a ring needs at least 3 distinct points, got 2"),
        ([feature([square(0, 0, 9, 9), [[1, 1], [2, 2]]])], "feature 0 ring 1: a ring needs at least 3"),
        ([feature([])], "feature 0: polygon coordinates must be a non-empty list"),
        ([feature([[square(0, 0, 5, 5)], 3], kind="MultiPolygon")], "feature 0 part 1: polygon coordinates"),
        ([feature([square(0, 0, 5, 5)], name=3)], "feature 0: properties.classification.name must be a string"),
    ],
)
def test_load_rejects_bad_input(tmp_path, document, problem):
    path = dump(tmp_path, document)
    with pytest.raises(InputError) as err:
        load_polygons(path)
    assert err.value.path == str(path)
    assert problem in str(err.value)


def test_polygon_rejects_bad_rings():
    with pytest.raises(ValueError):
        Polygon(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        Polygon(np.array([[0, 0], [1, np.inf], [1, 1]]))
    polygon = Polygon([[0, 0], [4, 0], [0, 3]])
    assert not polygon.exterior.flags.writeable


# ---------------------------------------------------------------- writing


def test_write_then_load_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    polygons = random_polygons(rng, 12, 500, 600)
    polygons.append(Polygon(polygons[0].exterior, holes=(polygons[1].exterior,)))
    path = tmp_path / "out" / "polygons.json"
    write_polygons(path, polygons)
    document = json.loads(path.read_text())
    assert all(f["properties"]["classification"]["name"] == "glomerulus" for f in document)
    assert all(ring[0] == ring[-1] for f in document for ring in f["geometry"]["coordinates"])
    back = load_polygons(path)
    assert len(back) == len(polygons)
    for a, b in zip(polygons, back, strict=False):
        assert np.array_equal(a.exterior, b.exterior)
        assert len(a.holes) == len(b.holes) and all(
            np.array_equal(h, k) for h, k in zip(a.holes, b.holes, strict=False)
        )
    assert [p.name for p in path.parent.iterdir()] == ["polygons.json"]  # no temporary left behind


# ---------------------------------------------------------------- rasterizing


@pytest.mark.parametrize(
    ("corners", "rows", "cols"),
    [
        ((10, 10, 20, 20), (10, 20), (10, 20)),  # integer vertices: boundary pixels are inside
        ((10.4, 10.4, 19.6, 19.6), (10, 20), (10, 20)),  # outline rounds to the nearest pixel
        ((10.6, 10.6, 19.4, 19.4), (11, 19), (11, 19)),  # float coordinates are honoured
        ((10.49, 10.51, 19.49, 19.51), (11, 20), (10, 19)),  # x and y each round on their own
    ],
)
def test_rasterize_pixel_convention(corners, rows, cols):
    mask = rasterize([rect(*corners)], 0, 32, 0, 32)
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1
    assert mask.dtype == np.uint8 and mask.flags.c_contiguous
    assert np.array_equal(mask, expected)


def test_rasterize_contains_every_centre_inside_and_little_else():
    triangle = Polygon([[0.3, 0.2], [30.7, 0.2], [0.3, 25.9]])
    mask = rasterize([triangle], 0, 32, 0, 32)
    yy, xx = np.mgrid[0:32, 0:32]
    inside = (xx >= 0.3) & (yy >= 0.2) & ((xx - 0.3) / 30.4 + (yy - 0.2) / 25.7 <= 1)
    near = (xx >= -0.5) & (yy >= -0.5) & ((xx - 0.3) / 30.4 + (yy - 0.2) / 25.7 <= 1 + 1.0 / 20)
    assert mask[inside].all()
    assert not mask[~near].any()


def test_overlapping_polygons_are_ored_not_xored():
    a, b = rect(0, 0, 20, 20), rect(10, 10, 30, 30)
    mask = rasterize([a, b], 0, 40, 0, 40)
    assert mask[15, 15] == 1  # the overlap stays filled
    assert mask.sum() == 2 * 21 * 21 - 11 * 11


def test_holes_clear_only_their_own_polygon():
    ring = Polygon(rect(0, 0, 40, 40).exterior, holes=(rect(10, 10, 30, 30).exterior,))
    island = rect(15, 15, 25, 25)
    mask = rasterize([ring, island], 0, 50, 0, 50)
    assert mask[5, 5] == 1 and mask[12, 12] == 0 and mask[20, 20] == 1
    assert np.array_equal(mask, rasterize([island, ring], 0, 50, 0, 50))


def test_windows_tile_the_full_raster():
    rng = np.random.default_rng(7)
    height, width = 420, 530
    polygons = random_polygons(rng, 40, height, width)
    full = rasterize(polygons, 0, height, 0, width)
    assert 0.2 < full.mean() < 0.95
    bands = np.concatenate([rasterize(polygons, y, min(y + 37, height), 0, width) for y in range(0, height, 37)])
    assert np.array_equal(bands, full)
    for _ in range(25):
        y0, y1 = np.sort(rng.integers(0, height + 1, 2))
        x0, x1 = np.sort(rng.integers(0, width + 1, 2))
        window = rasterize(polygons, int(y0), int(y1), int(x0), int(x1))
        assert window.shape == (y1 - y0, x1 - x0)
        assert np.array_equal(window, full[y0:y1, x0:x1])


def test_numpy_scan_of_small_windows_gives_cv2s_pixels():
    # A band smaller than a polygon's box is filled by the numpy scan, the full window by cv2: both must agree.
    rng = np.random.default_rng(11)
    size = 320
    polygons = random_polygons(rng, 30, size, size, max_radius=90.0)
    for _ in range(30):
        points = rng.uniform(-40, size + 40, (int(rng.integers(3, 25)), 2))  # self-intersecting
        ties = np.round(points) + rng.choice([0.0, 0.5, -0.5, 0.49, 0.51], points.shape)  # rounding ties
        flat = points.copy()
        flat[:, 1] = np.round(flat[:, 1] / 40) * 40  # horizontal edges
        polygons += [Polygon(points), Polygon(ties), Polygon(flat)]
    for polygon in polygons[:30]:
        (x_min, y_min), (x_max, y_max) = polygon.exterior.min(axis=0), polygon.exterior.max(axis=0)
        hole = rng.uniform([x_min, y_min], [x_max, y_max], (int(rng.integers(3, 9)), 2))
        polygons.append(Polygon(polygon.exterior, holes=(hole,)))
    for polygon in polygons:
        full = rasterize([polygon], -50, size + 50, -50, size + 50)
        bands = np.concatenate([rasterize([polygon], y, y + 12, -50, size + 50) for y in range(-50, size + 50, 12)])
        assert np.array_equal(bands, full)


def test_edges_up_to_65535_rows_tall_keep_cv2s_truncated_slope():
    # cv2 steps x by a slope truncated towards zero; 64000 rows down that moves x by up to a pixel.
    ring = np.array([[40.4, -32000.6], [0.2, 32000.3], [45.7, 31000.0], [20.0, -20000.0], [44.1, -31990.0]])
    left, top = np.floor(ring.min(axis=0)).astype(int) - 1
    right, bottom = np.ceil(ring.max(axis=0)).astype(int) + 2
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round((ring - [left, top]) * 256).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=8)
    window = rasterize([Polygon(ring)], 31600, 31900, 0, 45)  # smaller than the box: the numpy scan
    assert np.array_equal(window, canvas[31600 - top : 31900 - top, -left : 45 - left])


def test_windows_away_from_polygons_are_empty_and_inverted_windows_rejected():
    polygons = [rect(100.5, 100.5, 140.25, 120.75)]
    assert not rasterize(polygons, 0, 90, 0, 1000).any()
    assert not rasterize(polygons, -50, 0, -50, 0).any()
    assert rasterize(polygons, 0, 0, 0, 10).shape == (0, 10)
    assert rasterize([], 3, 8, 2, 9).shape == (5, 7)
    with pytest.raises(ValueError):
        rasterize(polygons, 10, 5, 0, 10)


def test_rasterize_far_coordinates_like_a_large_slide():
    polygon = rect(39_000.25, 38_500.25, 39_300.75, 38_900.75)
    band = rasterize([polygon], 38_400, 39_424, 38_912, 40_000)
    assert band[38_500 - 38_400 : 38_902 - 38_400, 39_000 - 38_912 : 39_302 - 38_912].all()
    assert band.sum() == 402 * 302
