"""Stores that OME-Zarr tools open: slide, prediction and pseudo-label stores checked by ome-zarr-models and ome-zarr.

ome-zarr-models validates NGFF 0.5 groups (what ngff-zarr and the OME
validators check); ome-zarr's ``Reader`` follows a label image's
``source.image`` to its slide. napari-ome-zarr (0.8 on) has a reader of its
own, checked here through its reader hook when it is installed (the napari
extra; in a viewer: tests/stores/test_napari.py). The stores sit in the
workflow's layout, so the links from the derived stores to their slide are
the ones ``results/`` holds.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Labels, Multiscales, Reader
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel

from tests.builders import write_slide_store
from tilepipe.inference.pseudo import write_pseudo_labels
from tilepipe.stores.ngff import max_2x2, mean_2x2_yx
from tilepipe.stores.probability import foreground_cutoff, read_probability, write_probability
from tilepipe.stores.slide import LABEL_NAME, SlideStore

HEIGHT, WIDTH, CHUNK = 150, 230, 32
SHAPES = [(150, 230), (75, 115), (38, 58)]  # the slide's levels (min_level_size 60)


@pytest.fixture
def stores(tmp_path) -> dict[str, Path]:
    """A slide store with labels, its stage-1 prediction and its pseudo-labels, laid out as in ``results/``."""
    results = tmp_path / "results"
    paths = {
        "slide": results / "slides" / "s1.zarr",
        "prediction": results / "predictions" / "stage1" / "s1.zarr",
        "pseudo": results / "pseudo" / "s1.zarr",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True)
    rng = np.random.default_rng(7)
    truth = np.zeros((HEIGHT, WIDTH), np.uint8)
    truth[30:70, 40:110] = 1
    image = rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8)
    write_slide_store(paths["slide"], image, truth, chunk=CHUNK, min_level_size=60)
    write_probability(paths["prediction"], probability(), chunk=CHUNK, slide_store=paths["slide"])
    write_pseudo_labels(paths["slide"], paths["prediction"], paths["pseudo"], 0.5, threads=1)
    return paths


def probability() -> np.ndarray:
    """The ``(y, x)`` uint8 prediction of the fixture's slide: a blob of random values, 0 elsewhere."""
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[20:100, 30:200] = np.random.default_rng(8).integers(0, 256, (80, 170), dtype=np.uint8)
    return values


def source_of(model: ImageLabel, store: Path) -> Path:
    """The image a label image names (``image-label.source.image``), resolved from the label image's path."""
    image_label = model.attributes.ome.image_label
    assert image_label is not None and image_label.source is not None and image_label.source.image is not None
    return (store / image_label.source.image).resolve()


def level_shapes_of(model: Image | ImageLabel, store: Path) -> list[tuple[int, ...]]:
    group = zarr.open_group(store, mode="r")
    return [group[dataset.path].shape for dataset in model.attributes.ome.multiscales[0].datasets]


def test_slide_store_is_an_image_with_its_labels_and_the_image_its_label_stores_name(stores):
    slide = open_ome_zarr(zarr.open_group(stores["slide"], mode="r"))
    assert isinstance(slide, Image) and not isinstance(slide, ImageLabel)
    assert level_shapes_of(slide, stores["slide"]) == [(3, *shape) for shape in SHAPES]
    assert slide.labels is not None and slide.labels.label_paths == [LABEL_NAME]
    glomeruli = slide.labels.get_image_labels_group(LABEL_NAME)
    assert [dataset.path for dataset in glomeruli.attributes.ome.multiscales[0].datasets] == ["0", "1", "2"]
    for name in ("prediction", "pseudo"):
        label_image = open_ome_zarr(zarr.open_group(stores[name], mode="r"))
        assert isinstance(label_image, ImageLabel), name
        source = source_of(label_image, stores[name])
        assert source == stores["slide"].resolve(), name
        assert isinstance(open_ome_zarr(zarr.open_group(source, mode="r")), Image), name


def test_prediction_store_is_a_label_image_pyramid_of_its_slide(stores):
    path = stores["prediction"]
    model = open_ome_zarr(zarr.open_group(path, mode="r"))
    assert isinstance(model, ImageLabel)
    assert model.attributes.ome.image_label.source.image == "../../../slides/s1.zarr"
    assert source_of(model, path) == stores["slide"].resolve()
    multiscale = model.attributes.ome.multiscales[0]
    assert [axis.name for axis in multiscale.axes] == ["y", "x"] and multiscale.type == "2x2 mean"
    assert [dataset.path for dataset in multiscale.datasets] == ["0", "1", "2"]
    assert level_shapes_of(model, path) == SHAPES == SlideStore(stores["slide"]).level_shapes
    group = zarr.open_group(path, mode="r")
    levels = [group[dataset.path][...] for dataset in multiscale.datasets]
    for finer, coarser in itertools.pairwise(levels):
        np.testing.assert_array_equal(coarser, mean_2x2_yx(finer))
    np.testing.assert_array_equal(read_probability(path)[...], probability())  # readers see level 0, unchanged
    assert group.attrs["tilepipe"]["content"] == "probability"


def test_pseudo_store_root_is_a_label_image_of_its_slide(stores):
    path = stores["pseudo"]
    model = open_ome_zarr(zarr.open_group(path, mode="r"))
    assert isinstance(model, ImageLabel)
    assert model.attributes.ome.image_label.source.image == "../../slides/s1.zarr"
    assert source_of(model, path) == stores["slide"].resolve()
    assert model.attributes.ome.multiscales[0].type == "2x2 max"
    assert level_shapes_of(model, path) == SHAPES
    expected = (probability() >= foreground_cutoff(0.5)).astype(np.uint8)
    store = SlideStore(stores["slide"], labels_path=path)
    np.testing.assert_array_equal(store.labels[...], expected)
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["1"][...], max_2x2(expected))
    np.testing.assert_array_equal(store.levels[0][...], SlideStore(stores["slide"]).levels[0][...])


def reader_nodes(path: Path) -> dict[Path, list]:
    """The nodes ome-zarr's Reader (napari-ome-zarr's) finds from ``path``: resolved path -> node."""
    nodes = list(Reader(parse_url(str(path)))())
    return {Path(node.zarr.subpath()): node for node in nodes}


@pytest.mark.parametrize("name", ["prediction", "pseudo"])
def test_ome_zarr_reader_opens_a_label_store_over_its_slide_and_the_slides_labels(stores, name):
    path, slide = stores[name].resolve(), stores["slide"].resolve()
    slide_nodes = reader_nodes(slide)
    assert list(slide_nodes) == [slide, slide / "labels", slide / "labels" / LABEL_NAME]
    assert slide_nodes[slide].first(Multiscales) is not None
    assert [level.shape for level in slide_nodes[slide].data] == [(3, *shape) for shape in SHAPES]
    assert slide_nodes[slide / "labels"].first(Labels) is not None
    glomeruli = slide_nodes[slide / "labels" / LABEL_NAME]
    assert glomeruli.first(Label) is not None and [level.shape for level in glomeruli.data] == SHAPES

    nodes = reader_nodes(path)  # through image-label.source.image: the slide, its labels, then this store
    assert list(nodes) == [*slide_nodes, path]
    assert [level.shape for level in nodes[slide].data] == [(3, *shape) for shape in SHAPES]
    label = nodes[path]
    assert label.first(Label) is not None and label.first(Multiscales) is not None
    assert [level.shape for level in label.data] == SHAPES
    np.testing.assert_array_equal(np.asarray(label.data[0]), zarr.open_group(path, mode="r")["0"][...])


def napari_reader(path: Path):
    """napari-ome-zarr's reader hook for ``path`` (no viewer, so no display needed); skips where it is not installed."""
    reader_module = pytest.importorskip(
        "napari_ome_zarr._reader", reason="napari-ome-zarr is not installed: pip install -e '.[napari]' (optional)"
    )
    reader = reader_module.napari_get_reader(str(path))
    assert reader is not None, f"napari-ome-zarr does not recognise {path}"
    return reader(str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # napari's own imports (npe2 on pydantic 2)
def test_napari_ome_zarr_reads_a_slide_store_as_rgb_layers_and_its_labels(stores):
    layers = napari_reader(stores["slide"])
    assert [layer_type for _, _, layer_type in layers] == ["image", "labels"]
    (image, image_meta, _), (labels, labels_meta, _) = layers
    assert image_meta["channel_axis"] == 0 and [level.shape for level in image] == [(3, *shape) for shape in SHAPES]
    assert [level.shape for level in labels] == SHAPES and labels_meta["name"].endswith(LABEL_NAME)
    assert image_meta["scale"] == labels_meta["scale"] == [1.0, 1.0]  # no pixel size recorded: pixels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["prediction", "pseudo"])
def test_napari_ome_zarr_reads_a_label_store_as_a_labels_layer_with_the_slides_levels(stores, name):
    """napari-ome-zarr (0.8 to 0.10) reads its own way, not through ome-zarr's Reader: a label image at a
    store's root is one labels layer; it looks for the image two folders up (not at ``source.image``, which
    ome-zarr's Reader follows), and opens that folder with ``zarr.open_group(mode="a")``, which writes a
    ``zarr.json`` there when it is not a group."""
    layers = napari_reader(stores[name])
    assert [layer_type for _, _, layer_type in layers] == ["labels"]
    (levels, metadata, _) = layers[0]
    assert [level.shape for level in levels] == SHAPES
    np.testing.assert_array_equal(np.asarray(levels[0]), zarr.open_group(stores[name], mode="r")["0"][...])
    assert metadata["scale"] == [1.0, 1.0]


def test_pseudo_labels_carry_their_slides_pixel_size_in_micrometres(stores, tmp_path):
    from tilepipe.stores.ngff import set_pixel_size

    slide = zarr.open_group(stores["slide"], mode="r+")
    slide.attrs["tilepipe"] = {"pixel_size": {"x_um": 0.25, "y_um": 0.26, "source": "test"}}
    set_pixel_size(slide, 0.26, 0.25)
    out = stores["pseudo"].with_name("s1b.zarr")
    write_pseudo_labels(stores["slide"], stores["prediction"], out, 0.5, threads=1)
    multiscale = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]
    assert [a.get("unit") for a in multiscale["axes"]] == ["micrometer", "micrometer"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[0.26 * 2**level, 0.25 * 2**level] for level in range(len(scales))]
    assert isinstance(open_ome_zarr(zarr.open_group(out, mode="r")), ImageLabel), "still valid with units"
