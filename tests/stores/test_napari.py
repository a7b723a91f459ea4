"""napari opens what `snakemake apply` writes, and docs/make_screenshot.py draws it (optional: the napari extra and a display).

The stores sit in apply's layout (``results/apply/slides/{id}.zarr`` and
``predictions/{id}.zarr`` built from arrays as tests/stores/test_ngff_validity.py
builds its stores, on the same small slide, with a pixel size of 0.26 x 0.25 um
(y, x: unequal, so a swapped axis shows); ``results/apply/{id}.zarr`` and
``{id}.geojson`` from them as rules apply_store and apply_objects write them).

Every napari call runs in a child process on a private Xvfb screen: a Qt
application that loses its X server, or cannot load its platform plugin,
aborts the process it runs in, and that must not be pytest. The tests skip,
saying why, where napari or napari-ome-zarr is not installed (``pip install
-e '.[napari]'``; ``make test`` installs it where it can), where there is
neither Xvfb nor a display (``make napari-deps`` installs Xvfb and Qt's X
libraries with apt), or where Qt cannot start on the display.
Qt's ``offscreen`` platform needs no display but gives napari no OpenGL
context (vispy fails on the first layer), so it is not an option.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.builders import write_prediction_store, write_slide_store
from tests.stores.test_ngff_validity import CHUNK, HEIGHT, SHAPES, WIDTH
from tilepipe.objects.export import write_objects
from tilepipe.stores.assemble import APPLY_LABELS, assemble_apply_store
from tilepipe.stores.ngff import GLOMERULUS_RGB, set_pixel_size
from tilepipe.stores.probability import foreground_cutoff

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "make_screenshot.py"
Y_UM, X_UM = 0.26, 0.25
DISCS = [(50, 60, 15, 0), (100, 160, 22, 8), (30, 190, 10, 0)]  # (cy, cx, outer radius, hole radius) in level-0 px
TIMEOUT = 120

# Opens each path given with napari-ome-zarr in a hidden viewer, in order, and prints its layers as JSON.
DESCRIBE_LAYERS = """
import json, sys
import numpy as np
import napari

viewer = napari.Viewer(show=False)
layers = []
for path in sys.argv[1:]:
    for layer in viewer.open(path, plugin="napari-ome-zarr"):
        levels = layer.data if layer.multiscale else [layer.data]
        layers.append({
            "path": path,
            "kind": type(layer).__name__,
            "name": layer.name,
            "multiscale": bool(layer.multiscale),
            "shapes": [list(level.shape) for level in levels],
            "coarsest_sum": int(np.asarray(levels[-1]).sum(dtype=np.int64)),
            "scale": [float(s) for s in layer.scale],
            "units": [str(u) for u in layer.units],
            "world": np.asarray(layer.extent.world).tolist(),
            "colormap": getattr(getattr(layer, "colormap", None), "name", None),
        })
viewer.close()
print("LAYERS " + json.dumps(layers))
"""


def load_script():
    """docs/make_screenshot.py as a module (for its :func:`virtual_display`)."""
    spec = importlib.util.spec_from_file_location("make_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def napari_env(tmp_path_factory):
    """The environment of a child process that can run napari on a screen; skips, saying why, where none can."""
    for module in ("napari", "napari_ome_zarr", "qtpy"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[napari]' (optional; `make test` installs it)")
    home = tmp_path_factory.mktemp("napari_home")
    (home / "runtime").mkdir(mode=0o700)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),  # napari's settings and npe2's cache, not the user's
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "QT_QPA_PLATFORM": "xcb",
    }
    with contextlib.ExitStack() as stack:
        if shutil.which("Xvfb"):  # a private screen even where there is a desktop: no windows, same pixels
            env["DISPLAY"] = stack.enter_context(load_script().virtual_display())
        elif not os.environ.get("DISPLAY"):
            pytest.skip("no display and no Xvfb: apt-get install xvfb (as root: `make napari-deps`)")
        probe = subprocess.run(
            [sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        if probe.returncode != 0:
            pytest.skip(
                f"Qt does not start on {env['DISPLAY']} (missing X libraries? `make napari-deps`): "
                + probe.stderr.strip()[-400:]
            )
        yield env


def run_napari(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def discs() -> np.ndarray:
    """The ``(y, x)`` uint8 prediction of the slide: three discs (one with a hole) at 0.9, fading to 0 outside."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    values = np.zeros((HEIGHT, WIDTH), np.float64)
    for cy, cx, outer, hole in DISCS:
        r = np.hypot(yy - cy, xx - cx)
        inside = np.clip(outer + 2 - r, 0, 4) / 4  # soft edges
        if hole:
            inside *= np.clip(r - hole + 2, 0, 4) / 4
        values = np.maximum(values, 0.9 * inside)
    return np.round(values * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> dict[str, Path]:
    """One slide as `snakemake apply` leaves it, and a labelled slide store as the main DAG has it."""
    results = tmp_path_factory.mktemp("napari") / "results"
    paths = {
        "slide": results / "apply" / "slides" / "s1.zarr",
        "prediction": results / "apply" / "predictions" / "s1.zarr",
        "store": results / "apply" / "s1.zarr",
        "geojson": results / "apply" / "s1.geojson",
        "table": results / "apply" / "s1.csv",
        "labelled": results / "slides" / "s2.zarr",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    probability = discs()
    rng = np.random.default_rng(11)
    tissue = np.array([236, 212, 228], np.float64)[:, None, None] + rng.normal(0, 6, (3, HEIGHT, WIDTH))
    stain = np.array([-40, -100, -60], np.float64)[:, None, None] * (probability / 255.0)  # glomeruli darker
    image = np.clip(tissue + stain, 0, 255).astype(np.uint8)
    write_slide_store(paths["slide"], image, chunk=CHUNK, min_level_size=60)
    slide = zarr.open_group(paths["slide"], mode="r+")
    slide.attrs["tilepipe"] = {"pixel_size": {"x_um": X_UM, "y_um": Y_UM, "source": "test"}}
    set_pixel_size(slide, Y_UM, X_UM)
    write_prediction_store(paths["prediction"], paths["slide"], probability, probability // 3, chunk=CHUNK)
    assemble_apply_store(paths["slide"], paths["prediction"], paths["store"], 0.5)
    cutoff = foreground_cutoff(0.5)
    rows = write_objects(probability, cutoff, paths["geojson"], paths["table"], slide_id="s1", mpp=X_UM, min_area=1)
    assert len(rows) == len(DISCS)
    write_slide_store(paths["labelled"], image, probability >= cutoff, chunk=CHUNK, min_level_size=60)
    return paths


@pytest.fixture(scope="module")
def opened(napari_env, applied) -> dict[str, list[dict]]:
    """The layers napari-ome-zarr gives one viewer for the apply store, then the labelled slide store (one
    child process), by the path they came from."""
    paths = [applied["store"], applied["labelled"]]
    output = run_napari(napari_env, "-c", DESCRIBE_LAYERS, *map(str, paths)).stdout
    layers = json.loads(output.split("LAYERS ", 1)[1])
    return {name: [layer for layer in layers if layer["path"] == str(applied[name])] for name in applied}


def test_napari_opens_an_apply_store_as_an_rgb_pyramid_in_micrometres_with_its_labels_over_it(opened, applied):
    layers = opened["store"]
    store = zarr.open_group(applied["store"], mode="r")
    images = [layer for layer in layers if layer["kind"] == "Image"]
    assert len(images) == 3  # one layer per channel
    assert [layer["colormap"] for layer in images] == ["red", "green", "blue"]
    for channel, layer in enumerate(images):
        assert layer["multiscale"] and layer["shapes"] == [list(shape) for shape in SHAPES]
        assert layer["scale"] == pytest.approx([Y_UM, X_UM]) and layer["units"] == ["micrometer", "micrometer"]
        assert layer["coarsest_sum"] == int(store["2"][channel].sum(dtype=np.int64))

    labels = {layer["name"].rsplit("/", 1)[-1]: layer for layer in layers if layer["kind"] == "Labels"}
    assert sorted(labels) == sorted(APPLY_LABELS)
    for name, layer in labels.items():
        assert layer["multiscale"] and layer["shapes"] == [list(shape) for shape in SHAPES], name
        assert layer["coarsest_sum"] == int(store[f"labels/{name}/2"][...].sum(dtype=np.int64)), name
        assert layer["scale"] == pytest.approx([Y_UM, X_UM]) and layer["units"] == ["micrometer", "micrometer"]
        np.testing.assert_allclose(layer["world"], images[0]["world"])  # the same micrometres: over the slide
    assert labels["glomeruli"]["coarsest_sum"] > 0
    np.testing.assert_allclose(images[0]["world"], [[0, 0], [(HEIGHT - 1) * Y_UM, (WIDTH - 1) * X_UM]])
    assert not (applied["store"].parent / "zarr.json").exists(), "napari-ome-zarr wrote beside the store"


def test_napari_opens_a_labelled_slide_store_with_image_and_labels_layers(opened):
    layers = opened["labelled"]
    assert [layer["kind"] for layer in layers] == ["Image", "Image", "Image", "Labels"]
    labels = layers[-1]
    name = re.sub(r" \[\d+\]$", "", labels["name"])  # napari numbers a name the apply store's labels took
    assert name.endswith("glomeruli") and labels["shapes"] == [list(shape) for shape in SHAPES]
    np.testing.assert_allclose(labels["world"], layers[0]["world"])


def test_make_screenshot_draws_slide_probability_and_geojson_outlines_where_they_are(napari_env, applied, tmp_path):
    out = tmp_path / "shot.png"
    height, width = 300, 400
    run_napari(
        napari_env,
        str(SCRIPT),
        *map(str, (applied["store"], applied["geojson"])),
        "-o",
        str(out),
        "--labels",
        "probability",
        "--width",
        str(width),
        "--height",
        str(height),
    )
    from PIL import Image

    shot = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert shot.shape == (height, width, 3)
    assert shot.std() > 10, "blank screenshot"
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    assert ((r > 200) & (g > 180) & (b > 200)).mean() > 0.2, "the slide's pale tissue is missing"
    assert ((r > 200) & (g < 150) & (b > 200)).sum() > 1000, "the magenta probability is missing"

    # The outlines (GLOMERULUS_RGB, red) where the GeoJSON's pixel edges map to: the whole slide fitted and centred.
    outline = (np.abs(shot - np.array(GLOMERULUS_RGB)).max(axis=-1) < 60) & (b < 120)
    zoom = min(height / (HEIGHT * Y_UM), width / (WIDTH * X_UM))  # screen px per micrometre
    features = json.loads(applied["geojson"].read_text())["features"]
    assert len(features) == len(DISCS)
    for feature in features:
        xy = np.concatenate([np.asarray(ring, float) for ring in feature["geometry"]["coordinates"]])
        rows = (xy[:, 1] - HEIGHT / 2) * Y_UM * zoom + height / 2  # pixel edges: world = edge * scale - scale / 2
        cols = (xy[:, 0] - WIDTH / 2) * X_UM * zoom + width / 2
        top, left = int(rows.min()) - 4, int(cols.min()) - 4
        ys, xs = np.nonzero(outline[top : int(rows.max()) + 5, left : int(cols.max()) + 5])
        assert len(ys) > 20, f"no outline of the object in rows {rows.min()}..{rows.max()}"
        assert (top + ys.min(), top + ys.max()) == pytest.approx((rows.min(), rows.max()), abs=2.5)
        assert (left + xs.min(), left + xs.max()) == pytest.approx((cols.min(), cols.max()), abs=2.5)
    # The hole's ring is drawn too: outline within the hole's radius of its centre, none at the centre.
    cy, cx, _, hole = next(disc for disc in DISCS if disc[3])
    row = round((cy + 0.5 - HEIGHT / 2) * Y_UM * zoom + height / 2)
    col = round((cx + 0.5 - WIDTH / 2) * X_UM * zoom + width / 2)
    assert outline[row, col - round((hole + 1.5) * X_UM * zoom) : col + 1].any(), "no outline of the hole"
    assert not outline[row - 2 : row + 3, col - 2 : col + 3].any()


def test_make_screenshot_refuses_a_label_the_store_does_not_have_naming_what_it_has(applied, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(
            [str(applied["store"]), str(applied["geojson"]), "-o", str(tmp_path / "x.png"), "--labels", "nuclei"]
        )
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "has no label image nuclei" in message and str(applied["store"]) in message
    assert "glomeruli, probability, uncertainty" in message
    assert not (tmp_path / "x.png").exists()
