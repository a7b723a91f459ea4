"""The synthetic demo dataset: plan, rendering, TIFF layouts and the Kaggle tables."""

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tilepipe.config import defaults
from tilepipe.demo.plan import LAYOUTS, UNLABELED_LAYOUTS, DemoSlide, plan_demo
from tilepipe.demo.render import render_slide
from tilepipe.demo.write import demo_paths, write_demo_slide, write_demo_tables, write_tiff
from tilepipe.errors import InputError
from tilepipe.io.polygons import load_polygons, rasterize
from tilepipe.io.rle import decode


def imread_shape(layout: str, height: int, width: int) -> tuple[int, ...]:
    """Return the array shape ``tifffile.imread`` gives for an RGB slide written in ``layout``."""
    if layout == "planar5d":
        return (1, 1, 3, height, width)
    if layout == "planar3":
        return (3, height, width)
    if layout in LAYOUTS:
        return (height, width, 3)
    raise ValueError(f"unknown layout {layout!r}")


SMALL = {"height": 700, "width": 900}
SEED = 11
INFO = "HuBMAP-20-dataset_information.csv"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_demo(root: Path, settings: dict, seed: int) -> list[DemoSlide]:
    """Write a whole demo under ``root`` (data/, truth/, truth.csv) as the workflow does."""
    slides = plan_demo(settings, seed)
    for slide in slides:
        write_demo_slide(slide, root / "data", root / "truth", seed)
    write_demo_tables(slides, root / "data", root / "truth", root / "truth.csv")
    return slides


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, write_demo(root, SMALL, SEED)


def truth_mask(root: Path, slide: DemoSlide) -> np.ndarray:
    return decode((root / "truth" / f"{slide.id}.rle").read_text().strip(), (slide.height, slide.width))


# ---------------------------------------------------------------- plan


def test_plan_is_deterministic_with_valid_unique_ids():
    slides = plan_demo({}, 42)
    assert slides == plan_demo(defaults("demo"), 42)
    assert all(re.fullmatch(r"[0-9a-f]{9}", s.id) for s in slides)
    assert len({s.id for s in slides}) == len(slides) == 11
    assert [s.index for s in slides] == list(range(11))
    assert {s.id for s in plan_demo({}, 43)}.isdisjoint(s.id for s in slides)


def test_plan_splits_patients_and_labels():
    slides = plan_demo({}, 42)
    train = [s for s in slides if s.split == "train"]
    others = [s for s in slides if s.split != "train"]
    assert [s.split for s in others] == ["test", "test", "external"]
    train_patients = {s.patient for s in train}
    assert len(train_patients) == 4
    assert all(sum(s.patient == p for s in train) == 2 for p in train_patients)
    assert all(10000 <= s.patient <= 99999 for s in slides)
    other_patients = [s.patient for s in others]
    assert len(set(other_patients)) == 3 and train_patients.isdisjoint(other_patients)
    assert sum(s.label_source == "polygons" for s in train) == 1
    assert sum(s.label_source == "rle" for s in train) == 7
    assert all(s.label_source is None for s in others)


def test_plan_layouts_and_sizes():
    slides = plan_demo({}, 42)
    train = [s for s in slides if s.split == "train"]
    assert {s.layout for s in train} == set(LAYOUTS)
    assert all(s.layout in UNLABELED_LAYOUTS for s in slides if s.split != "train")
    heights = [s.height for s in slides]
    widths = [s.width for s in slides]
    height, width = defaults("demo")["height"], defaults("demo")["width"]
    assert all(height * 0.9 - 1 <= h <= height * 1.1 + 1 for h in heights)
    assert all(width * 0.9 - 1 <= w <= width * 1.1 + 1 for w in widths)
    assert len(set(heights)) > 5 and len(set(widths)) > 5
    assert any(h % 2 for h in heights) and any(w % 2 for w in widths)
    assert any(h % 2 == 0 for h in heights) and any(w % 2 == 0 for w in widths)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"train_patients": 0}, "demo.train_patients"),
        ({"slides_per_patient": 1.5}, "demo.slides_per_patient"),
        ({"test_slides": 0}, "demo.test_slides"),
        ({"external_slides": -1}, "demo.external_slides"),
        ({"height": True}, "demo.height"),
        ({"width": 10}, "demo.width"),
        ({"glomerulus_diameter": [240, 75]}, "demo.glomerulus_diameter"),
        ({"glomerulus_diameter": [75]}, "demo.glomerulus_diameter"),
        ({"glomerulus_diameter": [75, 2000]}, "demo.glomerulus_diameter"),
        ({"size_jitter": 0.9}, "demo.size_jitter"),
        ({"polygon_slides": 9}, "demo.polygon_slides"),
        ({"glomerulus_size": 3}, "demo.glomerulus_size"),
    ],
)
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(InputError) as err:
        plan_demo(settings, 1)
    assert err.value.path is None
    assert str(err.value).startswith(f"{key}:")


def test_bad_seed():
    with pytest.raises(InputError, match="^seed:"):
        plan_demo({}, -1)


# ---------------------------------------------------------------- TIFF layouts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_reads_back(tmp_path, layout):
    slide = DemoSlide(0, "0123456ab", "train", 12345, layout, "rle", 333, 517, (40.0, 110.0))
    image = render_slide(slide, SEED).image
    path = tmp_path / "slide.tiff"
    write_tiff(path, image, layout)
    array = tifffile.imread(path)
    assert array.shape == imread_shape(layout, 333, 517)
    rgb = array.reshape(-1, 333, 517).transpose(1, 2, 0) if layout.startswith("planar") else array
    if layout == "jpeg_tiles":
        assert np.abs(rgb.astype(int) - image).mean() < 3
    else:
        assert np.array_equal(rgb, image)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled == (layout in ("tiled_bigtiff", "pyramid_subifds", "jpeg_tiles"))
        assert tif.is_bigtiff == (layout == "tiled_bigtiff")
        if layout == "pyramid_subifds":
            assert [level.shape for level in tif.series[0].levels] == [(333, 517, 3), (167, 259, 3), (84, 130, 3)]
            assert len(page.subifds) == 2
        if layout == "single_strip":
            assert len(page.dataoffsets) == 1
        if layout == "lzw_strips":
            assert len(page.dataoffsets) == math.ceil(333 / 64)


# ---------------------------------------------------------------- written dataset


def test_written_files_are_exactly_the_layout(demo):
    root, slides = demo
    expected = {root / "truth.csv"} | {root / "data" / name for name in ("train.csv", "sample_submission.csv", INFO)}
    for slide in slides:
        expected |= set(demo_paths(slide, root / "data", root / "truth").values())
    assert {p for p in root.rglob("*") if p.is_file()} == expected
    assert all(demo_paths(s, root / "data", root / "truth")["tiff"].parent.name == s.split for s in slides)


def test_tiffs_match_the_plan(demo):
    root, slides = demo
    for slide in slides:
        array = tifffile.imread(root / "data" / slide.split / f"{slide.id}.tiff")
        assert array.shape == imread_shape(slide.layout, slide.height, slide.width)


def test_train_csv_rows_decode_to_the_truth(demo):
    root, slides = demo
    rows = read_csv(root / "data" / "train.csv")
    assert rows[0] == ["id", "encoding"]
    by_id = {s.id: s for s in slides}
    ids = [r[0] for r in rows[1:]]
    assert ids == sorted(s.id for s in slides if s.label_source == "rle")
    for slide_id, encoding in rows[1:]:
        slide = by_id[slide_id]
        mask = decode(encoding, (slide.height, slide.width))
        assert mask.any()
        assert np.array_equal(mask, truth_mask(root, slide))
        assert np.array_equal(mask, render_slide(slide, SEED).mask)


def test_polygons_rasterize_to_the_truth(demo):
    root, slides = demo
    polygon_only = [s for s in slides if s.label_source == "polygons"]
    assert polygon_only
    for slide in (s for s in slides if s.split == "train"):
        polygons = load_polygons(root / "data" / "train" / f"{slide.id}.json")
        assert polygons
        assert np.array_equal(rasterize(polygons, 0, slide.height, 0, slide.width), truth_mask(root, slide))


def test_sample_submission_and_truth_csv(demo):
    root, slides = demo
    rows = read_csv(root / "data" / "sample_submission.csv")
    assert rows[0] == ["id", "predicted"]
    ids = [r[0] for r in rows[1:]]
    assert sorted(ids) == sorted(s.id for s in slides if s.split == "test")
    assert ids != sorted(ids)
    assert all(r[1] == "" for r in rows[1:])
    truth = read_csv(root / "truth.csv")
    assert truth[0] == ["id", "predicted"] and [r[0] for r in truth[1:]] == ids
    by_id = {s.id: s for s in slides}
    for slide_id, rle in truth[1:]:
        slide = by_id[slide_id]
        assert np.array_equal(decode(rle, (slide.height, slide.width)), truth_mask(root, slide))


def test_dataset_information(demo):
    root, slides = demo
    rows = read_csv(root / "data" / INFO)
    assert rows[0] == [
        "image_file", "width_pixels", "height_pixels", "anatomical_structures_segmention_file",
        "glomerulus_segmentation_file", "patient_number", "race", "ethnicity", "sex", "age",
        "weight_kilograms", "height_centimeters", "bmi_kg/m^2", "laterality", "percent_cortex", "percent_medulla",
    ]  # fmt: skip
    table = {r[0]: dict(zip(rows[0], r, strict=False)) for r in rows[1:]}
    described = [s for s in slides if s.split != "external"]
    assert sorted(table) == sorted(f"{s.id}.tiff" for s in described)
    donors = {}
    for slide in described:
        row = table[f"{slide.id}.tiff"]
        assert (int(row["width_pixels"]), int(row["height_pixels"])) == (slide.width, slide.height)
        assert int(row["patient_number"]) == slide.patient
        assert int(row["percent_cortex"]) + int(row["percent_medulla"]) == 100
        donor = tuple(row[k] for k in ("race", "sex", "age", "weight_kilograms", "laterality"))
        assert donors.setdefault(slide.patient, donor) == donor


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    root, _ = demo
    write_demo(tmp_path, SMALL, SEED)
    first = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert first == second
    for relative in first:
        assert (root / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


def test_other_seed_gives_other_images():
    slide = plan_demo(SMALL, SEED)[0]
    a, b = render_slide(slide, SEED), render_slide(slide, SEED + 1)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)


# ---------------------------------------------------------------- content


def test_glomeruli_inside_tissue_sized_and_apart():
    settings = {**SMALL, "glomerulus_diameter": [60, 150]}
    for slide in plan_demo(settings, SEED)[:6]:
        rendered = render_slide(slide, SEED)
        assert rendered.polygons
        assert not (rendered.mask.astype(bool) & ~rendered.tissue).any()
        separate = sum(int(rasterize([p], 0, slide.height, 0, slide.width).sum()) for p in rendered.polygons)
        assert separate == int(rendered.mask.sum())  # no pixel belongs to two glomeruli
        for polygon in rendered.polygons:
            x, y = polygon.exterior[:, 0], polygon.exterior[:, 1]
            area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
            assert 60 - 0.1 <= math.sqrt(4 * area / math.pi) <= 150 + 0.1
            assert 32 <= len(polygon.exterior) <= 64
            assert not np.array_equal(polygon.exterior, np.round(polygon.exterior))  # float coordinates


def test_stain_colours():
    slide = plan_demo(SMALL, SEED)[0]
    rendered = render_slide(slide, SEED)
    glass = rendered.image[~rendered.tissue].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(glass - (235, 235, 240)) < 6)
    tissue = rendered.image[rendered.tissue & (rendered.mask == 0)].reshape(-1, 3).mean(axis=0)
    glomeruli = rendered.image[rendered.mask == 1].reshape(-1, 3).mean(axis=0)
    for colour in (tissue, glomeruli):
        assert colour[0] > colour[1] + 20 and colour[2] > colour[1] + 10  # pink to magenta-purple
    assert glomeruli.mean() < tissue.mean() - 10  # dense tufts are darker than the tubules


def test_default_demo_foreground_and_tissue_are_plausible():
    train = [s for s in plan_demo({}, 42) if s.split == "train"]
    for slide in train[::2]:  # one slide per patient keeps this test at a few seconds
        rendered = render_slide(slide, 42)
        assert 0.01 <= rendered.mask.mean() <= 0.15, slide
        assert 0.45 <= rendered.tissue.mean() <= 0.75, slide
        assert len(rendered.polygons) >= 5


def test_the_readme_counts_the_layouts_the_demo_writes():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    said = re.search(r"TIFFs in (\w+) awkward layouts", readme.replace("\n", " "))
    assert said and words.index(said.group(1)) == len(LAYOUTS)
    written = {s.layout for s in plan_demo(defaults("demo"), 42)}
    assert written == set(LAYOUTS)
