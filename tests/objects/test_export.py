"""QuPath GeoJSON and object table: exact outlines (holes kept), measurements, stable ids, bounded boxes."""

import csv
import json
import math

import cv2
import numpy as np
import pytest
from rasterio.features import rasterize

from tilepipe.objects import export
from tilepipe.objects.components import find_objects, object_mask
from tilepipe.stores.ngff import GLOMERULUS_RGB


def slide(shape=(400, 500)) -> np.ndarray:
    values = np.zeros(shape, np.uint8)
    cv2.circle(values, (100, 100), 40, 230, -1)
    cv2.circle(values, (100, 100), 10, 0, -1)  # a hole
    cv2.ellipse(values, (350, 250), (90, 30), 30, 0, 360, 180, -1)
    values[300:399, 50:52] = 200  # tall thin object crossing bands
    values[10, 490] = 255  # a speck
    return values


def polygon_area(rings) -> float:
    def shoelace(ring):
        xy = np.asarray(ring, float)
        return 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))

    return shoelace(rings[0]) - sum(shoelace(r) for r in rings[1:])


@pytest.fixture
def written(tmp_path):
    values = slide()
    rows = export.write_objects(
        values, 128, tmp_path / "s.geojson", tmp_path / "s.csv", slide_id="s1", mpp=0.5, min_area=4
    )
    return values, rows, json.loads((tmp_path / "s.geojson").read_text()), tmp_path / "s.csv"


def test_every_object_is_a_qupath_detection_whose_outline_rasterises_to_its_pixels(written):
    values, rows, collection, _ = written
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == len(rows) == 3, "the speck is below min_area"
    objects = find_objects(values, 128, min_area=4)
    for feature, row, box in zip(collection["features"], rows, objects.box, strict=True):
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"] == {"name": "glomerulus", "color": list(GLOMERULUS_RGB)}
        assert feature["geometry"]["type"] == "Polygon"
        assert polygon_area(feature["geometry"]["coordinates"]) == row["area_px"]
        drawn = rasterize([feature["geometry"]], out_shape=values.shape, dtype=np.uint8)
        y0, x0, y1, x1 = box
        assert drawn.sum() == row["area_px"]
        assert (drawn[y0:y1, x0:x1] <= (values[y0:y1, x0:x1] >= 128)).all()
    ring_counts = sorted(len(f["geometry"]["coordinates"]) for f in collection["features"])
    assert ring_counts == [1, 1, 2], "the hole is kept"


def test_measurements_and_table(written):
    values, rows, collection, table = written
    on_disk = list(csv.DictReader(table.open()))
    assert [r["id"] for r in on_disk] == [r["id"] for r in rows]
    assert list(on_disk[0]) == export.TABLE_COLUMNS
    for row, feature in zip(rows, collection["features"], strict=True):
        measurements = feature["properties"]["measurements"]
        assert measurements["Area µm^2"] == row["area_um2"] == pytest.approx(row["area_px"] * 0.25, abs=1e-3)
        assert row["equivalent_diameter_um"] == pytest.approx(2 * math.sqrt(row["area_px"] / math.pi) * 0.5, abs=1e-3)
        assert 128 / 255 <= row["mean_probability"] <= 1
        assert row["perimeter_px"] >= 2 * math.sqrt(math.pi * row["area_px"]), "no shorter than a circle's"
        assert feature["id"] == row["id"]
    circle = min(rows, key=lambda r: r["y0"])
    assert circle["mean_probability"] == pytest.approx(230 / 255, abs=1e-4)
    assert (circle["centroid_x"], circle["centroid_y"]) == pytest.approx((100.5, 100.5), abs=0.3)


def test_ids_are_stable_and_differ_between_slides(tmp_path):
    values = slide()
    a = export.write_objects(values, 128, tmp_path / "a.json", tmp_path / "a.csv", slide_id="s1", mpp=1, min_area=4)
    b = export.write_objects(values, 128, tmp_path / "b.json", tmp_path / "b.csv", slide_id="s1", mpp=1, min_area=4)
    c = export.write_objects(values, 128, tmp_path / "c.json", tmp_path / "c.csv", slide_id="s2", mpp=1, min_area=4)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert not {r["id"] for r in a} & {r["id"] for r in c}


def test_uncertainty_is_averaged_per_object(tmp_path):
    values = slide()
    spread = np.full(values.shape, 51, np.uint8)
    rows = export.write_objects(
        values, 128, tmp_path / "s.json", tmp_path / "s.csv", slide_id="s", mpp=1, min_area=4, uncertainty=spread
    )
    assert {r["mean_uncertainty"] for r in rows} == {0.2}
    assert {r["uncertain_fraction"] for r in rows} == {0.0}
    feature = json.loads((tmp_path / "s.json").read_text())["features"][0]
    assert feature["properties"]["measurements"]["Mean uncertainty"] == 0.2


def test_the_uncertain_fraction_counts_pixels_whose_spread_reaches_the_cutoff(tmp_path):
    values = slide()
    spread = np.zeros(values.shape, np.uint8)
    spread[:, ::4] = export.UNCERTAIN_SPREAD  # a quarter of every object's columns, give or take its edges
    spread[:, 1::4] = export.UNCERTAIN_SPREAD - 1  # just below: not counted
    rows = export.write_objects(
        values, 128, tmp_path / "s.json", tmp_path / "s.csv", slide_id="s", mpp=1, min_area=4, uncertainty=spread
    )
    for row in rows:  # the fixture's objects have boxes of their own
        inside = values[row["y0"] : row["y1"], row["x0"] : row["x1"]] >= 128
        assert inside.sum() == row["area_px"]
        columns = np.arange(row["x0"], row["x1"])[None, :].repeat(inside.shape[0], axis=0)
        expected = ((columns % 4 == 0) & inside).sum() / inside.sum()
        assert row["uncertain_fraction"] == pytest.approx(expected, abs=1e-4)
    assert any(row["uncertain_fraction"] > 0.2 for row in rows)


def test_an_empty_slide_gives_an_empty_collection(tmp_path):
    rows = export.write_objects(
        np.zeros((50, 50), np.uint8), 128, tmp_path / "e.json", tmp_path / "e.csv", slide_id="e", mpp=1, min_area=1
    )
    assert rows == []
    assert json.loads((tmp_path / "e.json").read_text()) == {"type": "FeatureCollection", "features": []}
    assert (tmp_path / "e.csv").read_text().strip() == ",".join(export.TABLE_COLUMNS)


def test_a_huge_object_is_outlined_coarsely_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_BOX_PIXELS", 1000)
    values = np.zeros((200, 300), np.uint8)
    values[20:180, 30:290] = 255
    rows = export.write_objects(values, 128, tmp_path / "h.json", tmp_path / "h.csv", slide_id="h", mpp=1, min_area=1)
    (row,) = rows
    assert row["outline_step"] > 1 and row["area_px"] == 160 * 260, "measured exactly, outlined coarsely"
    feature = json.loads((tmp_path / "h.json").read_text())["features"][0]
    assert polygon_area(feature["geometry"]["coordinates"]) == pytest.approx(160 * 260, rel=0.1)


def test_outlines_are_valid_geometries_for_shapely_whatever_the_shape():
    """shapely (JTS's rules, as QuPath uses them): valid, and the area is the pixel count, even for pixels
    touching only at corners (8-connected objects) and holes touching the outline."""
    from shapely.geometry import shape

    rng = np.random.default_rng(0)
    for _ in range(200):
        values = np.where(rng.random((24, 24)) < 0.55, 255, 0).astype(np.uint8)
        objects = find_objects(values, 128)
        for box, seed, area in zip(objects.box, objects.seed, objects.area, strict=True):
            geometry = shape(export.outline(object_mask(values, 128, box, seed), int(box[1]), int(box[0])))
            assert geometry.is_valid and geometry.area == area


def test_the_written_geojson_is_valid_for_shapely(written):
    from shapely.geometry import shape

    _, rows, collection, _ = written
    for feature, row in zip(collection["features"], rows, strict=True):
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.area == row["area_px"]
