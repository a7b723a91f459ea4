"""The apply store: one NGFF image per applied slide with its image (linked) and its predicted labels."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel

from tests.builders import write_prediction_store, write_slide_store
from tilepipe.errors import InputError
from tilepipe.stores import assemble
from tilepipe.stores.assemble import APPLY_LABELS, assemble_apply_store
from tilepipe.stores.ngff import GLOMERULUS_RGB, max_2x2, set_pixel_size
from tilepipe.stores.probability import foreground_cutoff
from tilepipe.stores.slide import SlideStore

HEIGHT, WIDTH, CHUNK = 150, 230, 32
SHAPES = [(150, 230), (75, 115), (38, 58)]  # min_level_size 60
Y_UM, X_UM = 0.26, 0.25
THRESHOLD = 0.4


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """An ingested slide (pixel size known) and its prediction (probability and spread), in apply's layout."""
    apply = tmp_path / "results" / "apply"
    paths = {"slide": apply / "slides" / "s1.zarr", "prediction": apply / "predictions" / "s1.zarr"}
    rng = np.random.default_rng(5)
    write_slide_store(
        paths["slide"], rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8), chunk=CHUNK, min_level_size=60
    )
    slide = zarr.open_group(paths["slide"], mode="r+")
    slide.attrs["tilepipe"] = {"pixel_size": {"x_um": X_UM, "y_um": Y_UM, "source": "test"}}
    set_pixel_size(slide, Y_UM, X_UM)
    write_prediction_store(paths["prediction"], paths["slide"], probability(), spread(), chunk=48)
    return paths


def probability() -> np.ndarray:
    """``(y, x)`` uint8: random values in a block (crossing chunk borders and the threshold), 0 elsewhere."""
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[20:131, 25:201] = np.random.default_rng(8).integers(0, 256, (111, 176), dtype=np.uint8)
    return values


def spread() -> np.ndarray:
    return (probability() // 2).astype(np.uint8)


def levels(group: zarr.Group) -> list[np.ndarray]:
    return [group[d["path"]][...] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]


def test_labels_are_the_thresholded_prediction_at_every_level_and_the_maps_the_predictions(inputs, tmp_path):
    out = tmp_path / "results" / "apply" / "s1.zarr"
    counts = assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD, threads=2)
    store = zarr.open_group(out, mode="r")
    assert store["labels"].attrs["ome"]["labels"] == sorted(APPLY_LABELS)

    expected = (probability() >= foreground_cutoff(THRESHOLD)).astype(np.uint8)
    assert 0 < expected.sum() < expected.size and counts["foreground_px"] == expected.sum()
    mask = levels(store["labels/glomeruli"])
    assert [level.shape for level in mask] == SHAPES and all(level.dtype == np.uint8 for level in mask)
    for level in mask:
        np.testing.assert_array_equal(level, expected)
        expected = max_2x2(expected)  # the next level: the 2x2 maximum of this one

    prediction = zarr.open_group(inputs["prediction"], mode="r")
    for name, source in (("probability", prediction), ("uncertainty", prediction["uncertainty"])):
        ours, theirs = levels(store["labels"][name]), levels(source)
        assert [level.shape for level in ours] == SHAPES
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(store["labels/probability/0"][...], probability())
    np.testing.assert_array_equal(store["labels/uncertainty/0"][...], spread())

    # A slide store to the readers of the pipeline: its image, its mask as labels, its pixel size.
    opened = SlideStore(out)
    np.testing.assert_array_equal(opened.labels[...], mask[0])
    assert opened.pixel_size(assumed_um=9.0) == SlideStore(inputs["slide"]).pixel_size(assumed_um=9.0)


def test_image_arrays_are_the_ingested_files_linked(inputs, tmp_path):
    out = tmp_path / "s1.zarr"
    counts = assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD)
    slide, ours = zarr.open_group(inputs["slide"], mode="r"), zarr.open_group(out, mode="r")
    chunk_files = [p for p in inputs["slide"].rglob("*") if p.is_file() and p.name != "zarr.json"]
    image_files = [p for p in chunk_files if p.relative_to(inputs["slide"]).parts[0] != "labels"]
    assert image_files and counts["copied"] == 0 and counts["linked"] >= len(image_files)
    for path in image_files:
        assert os.stat(path).st_ino == os.stat(out / path.relative_to(inputs["slide"])).st_ino, path
    for level in ("0", "1", "2"):
        np.testing.assert_array_equal(ours[level][...], slide[level][...])
        assert not (out / level / "zarr.json").samefile(inputs["slide"] / level / "zarr.json"), "metadata is copied"


def test_where_links_fail_the_files_are_copied(inputs, tmp_path, monkeypatch):
    link = os.link
    inputs_folder = inputs["slide"].parent.parent

    def no_links_from_the_inputs(source, target, **kwargs):  # as if they were on another file system
        if Path(source).is_relative_to(inputs_folder):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source))
        return link(source, target, **kwargs)  # zarr's own writes link too

    monkeypatch.setattr(os, "link", no_links_from_the_inputs)
    out = tmp_path / "s1.zarr"
    counts = assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD)
    assert counts["linked"] == 0 and counts["copied"] > 0
    chunk = out / "0" / "c" / "0" / "0" / "0"
    source = inputs["slide"] / "0" / "c" / "0" / "0" / "0"
    assert chunk.read_bytes() == source.read_bytes() and not chunk.samefile(source)
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][...], SlideStore(inputs["slide"]).levels[0][...])


def test_the_store_validates_as_an_ngff_image_with_three_label_images_in_micrometres(inputs, tmp_path):
    out = tmp_path / "s1.zarr"
    assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD)
    model = open_ome_zarr(zarr.open_group(out, mode="r"))
    assert isinstance(model, Image) and not isinstance(model, ImageLabel)
    assert model.labels is not None and sorted(model.labels.label_paths) == sorted(APPLY_LABELS)
    for name in APPLY_LABELS:
        label = model.labels.get_image_labels_group(name)
        assert isinstance(label, ImageLabel), name
        assert label.attributes.ome.image_label.source.image == "../../"
        assert [d.path for d in label.attributes.ome.multiscales[0].datasets] == ["0", "1", "2"]

    ome = zarr.open_group(out, mode="r").attrs["ome"]
    assert [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]] == [
        [1.0, Y_UM * 2**level, X_UM * 2**level] for level in range(3)
    ]
    for name in APPLY_LABELS:
        multiscale = zarr.open_group(out / "labels" / name, mode="r").attrs["ome"]["multiscales"][0]
        assert [a.get("unit") for a in multiscale["axes"]] == ["micrometer", "micrometer"], name
        scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
        assert scales == [[Y_UM * 2**level, X_UM * 2**level] for level in range(3)], name
    glomeruli = zarr.open_group(out / "labels" / "glomeruli", mode="r").attrs["ome"]["image-label"]
    assert glomeruli["colors"] == [{"label-value": 1, "rgba": [*GLOMERULUS_RGB, 255]}]
    assert glomeruli["properties"] == [{"label-value": 1, "class": "glomerulus"}]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # napari's own imports (npe2 on pydantic 2)
def test_napari_ome_zarr_reads_the_image_and_every_label_from_the_store_alone(inputs, tmp_path):
    reader_module = pytest.importorskip(
        "napari_ome_zarr._reader", reason="napari-ome-zarr is not installed: pip install -e '.[napari]' (optional)"
    )
    out = tmp_path / "apply" / "s1.zarr"
    assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD)
    before = sorted(p.name for p in out.parent.iterdir())
    layers = reader_module.napari_get_reader(str(out))(str(out))
    assert [kind for _, _, kind in layers] == ["image", "labels", "labels", "labels"]
    (image, image_meta, _), *labels = layers
    assert [level.shape for level in image] == [(3, *shape) for shape in SHAPES]
    for data, meta, _ in labels:
        assert [level.shape for level in data] == SHAPES
        assert meta["scale"] == pytest.approx([Y_UM, X_UM]) and image_meta["scale"] == pytest.approx([Y_UM, X_UM])
    assert sorted(meta["name"].rsplit("/", 1)[-1] for _, meta, _ in labels) == sorted(APPLY_LABELS)
    assert sorted(p.name for p in out.parent.iterdir()) == before, "the reader wrote beside the store"


def test_a_failure_mid_write_leaves_no_store(inputs, tmp_path, monkeypatch):
    out = tmp_path / "apply" / "s1.zarr"
    out.parent.mkdir()
    real = assemble.link_or_copy
    written = []

    def fail_at_the_probability(source, target):  # after the image and the mask are written
        if "probability" in Path(target).parts:
            temporary = next(p for p in Path(target).parents if ".tmp-" in p.name)
            written.extend(p.name for p in temporary.iterdir())
            raise OSError(errno.EIO, "disk went away", str(target))
        return real(source, target)

    monkeypatch.setattr(assemble, "link_or_copy", fail_at_the_probability)
    with pytest.raises(OSError, match="disk went away"):
        assemble_apply_store(inputs["slide"], inputs["prediction"], out, THRESHOLD)
    assert {"0", "1", "2", "labels"} <= set(written), "it failed mid-write"
    assert list(out.parent.iterdir()) == []


def test_a_prediction_of_another_slide_is_refused_naming_it(inputs, tmp_path):
    other = tmp_path / "other.zarr"
    write_slide_store(other, np.zeros((3, HEIGHT, WIDTH - 10), np.uint8), chunk=CHUNK, min_level_size=60)
    wrong = tmp_path / "predictions" / "other.zarr"
    shape = (HEIGHT, WIDTH - 10)
    write_prediction_store(wrong, other, np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), chunk=48)
    out = tmp_path / "apply" / "s1.zarr"
    with pytest.raises(InputError, match="differ from the slide's") as error:
        assemble_apply_store(inputs["slide"], wrong, out, THRESHOLD)
    assert str(wrong) in str(error.value)
    assert not out.exists()
