"""Polygons far outside the slide: exact in-slide masks in bounded memory; absurd and non-finite vertices refused."""

import json
import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile

from tilepipe.data.ingest import ingest_slide
from tilepipe.errors import InputError
from tilepipe.io.polygons import Polygon, load_polygons, rasterize

HEIGHT, WIDTH = 300, 520  # the slide, level-0 pixels


def write_features(path, *rings_and_ids):
    """Write a Kaggle-style JSON of Polygon Features, one per ``(ring, id)``; return ``path``."""
    features = [
        {
            "type": "Feature",
            "id": feature_id,
            "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            "properties": {"classification": {"name": "glomerulus"}},
        }
        for ring, feature_id in rings_and_ids
    ]
    path.write_text(json.dumps(features))
    return path


def peak_bytes(function, *args):
    """Return ``(function(*args), the peak bytes it allocated)``, numpy arrays included (tracemalloc)."""
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def even_odd_reference(ring, height, width, margin=1.5):
    """Return ``(inside, near)``: pixel centres inside ``ring`` by the even-odd rule, and those within ``margin`` px
    of its outline (where rounding the vertices to whole pixels and the drawn outline may decide either way).
    """
    ring = np.asarray(ring, dtype=np.float64)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    inside = np.zeros((height, width), dtype=bool)
    near = np.zeros((height, width), dtype=bool)
    for (ax, ay), (bx, by) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
        if (ay > y).any() or (by > y).any():
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = ax + (y - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (x < at)
        t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
        near |= np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay))) <= margin
    return inside, near


def test_vertex_at_1e7_gives_the_mask_of_the_polygon_clipped_by_hand():
    far = Polygon([[50.3, 40.2], [1e7, 40.2], [1e7, 60.7], [50.3, 60.7]])
    by_hand = Polygon([[50.3, 40.2], [WIDTH + 5, 40.2], [WIDTH + 5, 60.7], [50.3, 60.7]])
    mask, peak = peak_bytes(rasterize, [far], 0, HEIGHT, 0, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[40:62, 50:] = 1  # vertices round to rows 40 and 61, column 50
    assert np.array_equal(rasterize([by_hand], 0, HEIGHT, 0, WIDTH), expected)
    assert np.array_equal(mask, expected)
    assert peak < 4 * HEIGHT * WIDTH


@pytest.mark.parametrize(
    "ring",
    [
        [[60.4, 30.2], [1e7, 45.6], [60.4, 75.9]],  # a sliver whose tip is 1e7 px to the right
        [[100.0, 100.0], [1e7, 2e6], [400.5, 250.25], [-3e6, 1e7], [-2e5, -7e6]],  # far in every direction, crossed
        [[-1e7, -1e7], [1e7, -1e7], [1e7, 1e7], [-1e7, 1e7]],  # covers the whole slide
    ],
)
def test_far_vertices_give_the_even_odd_mask_inside_the_slide(ring):
    mask, peak = peak_bytes(rasterize, [Polygon(ring)], 0, HEIGHT, 0, WIDTH)
    inside, near = even_odd_reference(ring, HEIGHT, WIDTH)
    assert np.array_equal(mask[~near].astype(bool), inside[~near])
    assert peak < 4 * HEIGHT * WIDTH
    bands = np.concatenate([rasterize([Polygon(ring)], y, min(y + 64, HEIGHT), 0, WIDTH) for y in range(0, HEIGHT, 64)])
    assert np.array_equal(bands, mask)


@pytest.mark.parametrize(
    "ring",
    [
        [[-20 * WIDTH, -5.5], [60 * WIDTH, 150.2], [200.6, HEIGHT + 5.4]],
        [[-3.5, -2.25], [60 * WIDTH, 40.5], [300.5, 120.75], [WIDTH + 3, HEIGHT + 2], [-20 * WIDTH, 200.0]],
    ],
)
def test_vertex_at_60x_the_slide_gives_what_cv2_gives_on_a_canvas_holding_the_whole_polygon(ring):
    ring = np.asarray(ring)
    left, top = np.floor(ring.min(axis=0)).astype(int) - 1
    right, bottom = np.ceil(ring.max(axis=0)).astype(int) + 2
    assert left <= 0 and top <= 0 and right >= WIDTH and bottom >= HEIGHT
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    fixed = np.round((ring - [left, top]) * 256).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=8)
    mask, peak = peak_bytes(rasterize, [Polygon(ring)], 0, HEIGHT, 0, WIDTH)
    assert np.array_equal(mask, canvas[-top : HEIGHT - top, -left : WIDTH - left])
    assert peak < 4 * HEIGHT * WIDTH  # cv2's canvas here is 80 times the slide


def test_vertex_at_60x_the_slide_rasterizes_a_2000_px_band_in_bounded_memory():
    side = 2000
    polygon = Polygon([[100, 100], [60 * side, 1000], [100, 1900], [-200, 1000]])
    band, peak = peak_bytes(rasterize, [polygon], 0, side, 0, side)
    assert peak < 50 * 2**20  # the band is 4 MB; the polygon's box would be 120000 x 1800 px
    assert band[1000].all() and not band[:100].any() and band[150, 100:300].all()


@pytest.mark.parametrize("size", [(HEIGHT, WIDTH), None])
def test_vertex_at_1e9_is_refused_naming_the_file_and_the_feature(tmp_path, size):
    path = write_features(
        tmp_path / "slide.json",
        ([[10, 10], [50, 10], [50, 50]], "fine"),
        ([[100, 100], [1e9, 150], [100, 200]], "far-one"),
    )
    with pytest.raises(InputError) as err:
        load_polygons(path, size=size)
    assert err.value.path == str(path)
    assert "feature 1 (id 'far-one') ring 0 point 1" in str(err.value)
    assert ("100 times the slide's size (300 x 520 px" if size else "+-536870912 px") in str(err.value)


def test_the_100x_limit_is_per_axis_of_the_slide(tmp_path):
    inside = write_features(tmp_path / "inside.json", ([[0, 0], [100 * WIDTH, 0], [0, -100 * HEIGHT]], None))
    assert len(load_polygons(inside, size=(HEIGHT, WIDTH))) == 1
    for name, vertex in (("wide.json", [100 * WIDTH + 1, 0]), ("tall.json", [0, 100 * HEIGHT + 1])):
        path = write_features(tmp_path / name, ([[0, 0], vertex, [5, 5]], None))
        with pytest.raises(InputError, match="feature 0 ring 0 point 1"):
            load_polygons(path, size=(HEIGHT, WIDTH))


def test_ingest_refuses_a_vertex_at_1e9_naming_the_json(tmp_path):
    tiff = tmp_path / "slide.tiff"
    tifffile.imwrite(tiff, np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), photometric="rgb", tile=(64, 64))
    path = write_features(tmp_path / "slide.json", ([[100, 100], [1e9, 150], [100, 200]], "far-one"))
    with pytest.raises(InputError) as err:
        ingest_slide(
            tiff,
            tmp_path / "slide.zarr",
            polygons_path=path,
            chunk=64,
            min_level_size=100,
            assumed_mpp=0.5,
            threads=1,
            progress=False,
        )
    assert err.value.path == str(path) and "feature 0 (id 'far-one')" in str(err.value)
    assert not (tmp_path / "slide.zarr").exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_are_refused_naming_the_file(tmp_path, literal):
    path = tmp_path / "slide.json"
    path.write_text(
        '[{"type": "Feature", "id": "g7", "geometry": {"type": "Polygon", '
        f'"coordinates": [[[0, 0], [10, {literal}], [0, 10], [0, 0]]]}}}}]'
    )
    assert json.loads(path.read_text())  # Python's json reads these literals: the loader must refuse them
    with pytest.raises(InputError) as err:
        load_polygons(path)
    assert err.value.path == str(path)
    assert "feature 0 (id 'g7') ring 0 point 1: coordinates must be finite" in str(err.value)


def test_polygon_refuses_coordinates_no_slide_could_have():
    with pytest.raises(ValueError, match="within"):
        Polygon([[0, 0], [1e9, 0], [0, 5]])
