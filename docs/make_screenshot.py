"""A PNG of an applied slide in napari: its store (image and labels) and the glomerulus outlines of its GeoJSON.

    python docs/make_screenshot.py results/apply/{id}.zarr results/apply/{id}.geojson \\
        -o docs/images/apply_napari.png [--labels probability glomeruli] \\
        [--width 1200 --height 800] [--box X0 Y0 X1 Y1] [--outline-color yellow]

What `snakemake apply` wrote for one slide: the apply store, opened with the
napari-ome-zarr plugin as a user opens it (one image layer per RGB channel,
the store's pyramid, scale in micrometres where the store has a pixel size,
and one labels layer per ``labels/{name}``), and the QuPath GeoJSON (one
outline per ring, holes included, in a Shapes layer of closed paths).
``--labels`` names the label images shown (default ``glomeruli``; the store
has ``glomeruli``, ``probability`` and ``uncertainty``); the others are
left out. GeoJSON coordinates are level-0 pixel edges ``(x, y)``; napari puts
pixel ``(y, x)``'s centre at data ``(y, x)``, so a ring becomes ``(y - 0.5,
x - 0.5)`` in a layer with the slide's scale. ``--box`` frames level-0 pixels
``x0..x1, y0..y1`` (default: the whole slide).

Needs the napari extra (``pip install -e '.[napari]'``) and a display:
without ``DISPLAY`` it starts its own Xvfb (Debian ``xvfb``; ``make
napari-deps`` installs it with the Qt libraries napari needs). The window is
shown on that display because a hidden Qt 5 canvas renders black.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import zarr

from tilepipe.stores.ngff import GLOMERULUS_RGB

OUTLINE_SCREEN_PX = 3.0  # outline width on the screenshot, in screen pixels
DEFAULT_LABELS = ("glomeruli",)


@contextlib.contextmanager
def virtual_display(width: int = 1920, height: int = 1080) -> Iterator[str]:
    """Start a private Xvfb screen of ``width`` x ``height`` and set ``DISPLAY`` to it; yield its name (e.g. ``":3"``).

    Xvfb picks a free display number itself (``-displayfd``), so parallel
    runs do not collide. ``DISPLAY`` is restored and the server stopped on
    exit. Raises RuntimeError when there is no ``Xvfb`` or it does not start.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("no Xvfb on PATH (Debian: apt-get install xvfb; see `make napari-deps`)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()  # written once the server accepts connections
    if not number:
        _, err = server.communicate(timeout=10)
        raise RuntimeError(f"Xvfb did not start: {err.decode(errors='replace')[-500:]}")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield os.environ["DISPLAY"]
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def outline_rings(geojson_path: str | os.PathLike) -> tuple[list[np.ndarray], list[list[float]]]:
    """Read a QuPath GeoJSON; return every ring (exteriors and holes) as a closed ``(n, 2)`` path of napari
    ``(y, x)`` data coordinates (level-0 pixels, pixel centres at integers) and its feature's RGBA colour (0..1).

    Features may be a FeatureCollection's or a bare list; ``Polygon`` and
    ``MultiPolygon`` geometries are read, other types skipped. The colour is
    ``properties.classification.color`` (default :data:`GLOMERULUS_RGB`).
    """
    document = json.loads(Path(geojson_path).read_text(encoding="utf-8"))
    features = document["features"] if isinstance(document, dict) else document
    rings: list[np.ndarray] = []
    colors: list[list[float]] = []
    for feature in features:
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            polygons = [geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            continue
        classification = (feature.get("properties") or {}).get("classification") or {}
        rgb = classification.get("color", GLOMERULUS_RGB)
        for polygon in polygons:
            for ring in polygon:
                xy = np.asarray(ring, dtype=np.float64)  # closed: the last point is the first
                rings.append(xy[:, ::-1] - 0.5)
                colors.append([c / 255 for c in rgb[:3]] + [1.0])
    return rings, colors


def store_labels(store: str | os.PathLike) -> list[str]:
    """The names of the label images of the NGFF image at ``store`` (``labels/`` listing; none without one).

    Raises ValueError naming ``store`` when it is not a zarr group.
    """
    try:
        group = zarr.open_group(store, mode="r")
    except Exception as err:
        raise ValueError(f"{store}: not a zarr store ({err})") from err
    if "labels" not in group:
        return []
    return list(group["labels"].attrs.get("ome", {}).get("labels", []))


def render(
    store: str | os.PathLike,
    geojson: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    size: tuple[int, int] = (800, 1200),
    box: Sequence[float] | None = None,
    outline_color: str | None = None,
) -> np.ndarray:
    """Draw the apply store (image and the label images ``labels``) and its GeoJSON outlines in napari; save
    the canvas as ``out``.

    ``size``: the PNG's ``(height, width)``; ``box``: level-0 pixels
    ``(x0, y0, x1, y1)`` to frame (default the whole slide), fitted inside
    the canvas and centred; ``outline_color``: one colour (a napari colour
    name or hex) for every outline instead of each feature's own. Needs a
    display (see :func:`virtual_display`).
    Returns the ``(height, width, 4)`` uint8 RGBA screenshot.
    """
    import napari

    height, width = size
    viewer = napari.Viewer(title="tilepipe apply", show=True)  # a hidden Qt 5 canvas renders black
    try:
        layers = viewer.open(str(store), plugin="napari-ome-zarr")
        images = [layer for layer in layers if isinstance(layer, napari.layers.Image)]
        if not images:
            raise RuntimeError(f"napari-ome-zarr found no image in {store}")
        scale = tuple(float(s) for s in images[0].scale[-2:])
        slide_height, slide_width = images[0].data[0].shape[-2:]
        for layer in layers:
            if isinstance(layer, napari.layers.Labels):
                if layer.name.rsplit("/", 1)[-1] in labels:
                    layer.visible = True  # napari-ome-zarr opens labels hidden
                else:
                    viewer.layers.remove(layer)

        x0, y0, x1, y1 = box if box is not None else (0, 0, slide_width, slide_height)
        zoom = min(height / ((y1 - y0) * scale[0]), width / ((x1 - x0) * scale[1]))  # screen px per world unit
        rings, colors = outline_rings(geojson)
        if rings:
            viewer.add_shapes(
                rings,
                shape_type="path",  # outlines only: no faces to triangulate
                name=f"glomeruli ({Path(geojson).name})",
                scale=scale,
                units=images[0].units,  # napari hides the scale bar's unit when layers' units differ
                edge_color=colors if outline_color is None else outline_color,
                edge_width=OUTLINE_SCREEN_PX / (zoom * min(scale)),  # data units: level-0 pixels
            )
        if any(str(layer.units[-1]) != "pixel" for layer in images):
            viewer.canvas.overlays.scale_bar.visible = True
        viewer.scene.camera.center = ((y0 + y1) / 2 * scale[0] - scale[0] / 2, (x0 + x1) / 2 * scale[1] - scale[1] / 2)
        viewer.scene.camera.zoom = zoom
        return viewer.screenshot(str(out), size=(height, width), canvas_only=True, flash=False)
    finally:
        viewer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="an apply store, e.g. results/apply/{id}.zarr")
    parser.add_argument("geojson", help="its objects, e.g. results/apply/{id}.geojson")
    parser.add_argument("-o", "--out", required=True, help="PNG to write")
    parser.add_argument(
        "--labels",
        nargs="+",
        default=list(DEFAULT_LABELS),
        metavar="NAME",
        help="label images to show (default: %(default)s)",
    )
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="level-0 pixels to frame")
    parser.add_argument("--outline-color", help="one colour for every outline (default: each feature's classification)")
    args = parser.parse_args(argv)
    try:
        available = store_labels(args.store)
    except ValueError as err:
        parser.error(str(err))
    missing = [name for name in args.labels if name not in available]
    if missing:
        parser.error(f"{args.store} has no label image {', '.join(missing)} (it has: {', '.join(available) or 'none'})")
    if not Path(args.geojson).is_file():
        parser.error(f"{args.geojson}: no such GeoJSON file")
    if not os.environ.get("DISPLAY"):
        # Draw in a child process on a private screen: Qt aborts the process whose X server goes away.
        with virtual_display(max(args.width, 1920), max(args.height, 1080)):
            sys.exit(subprocess.call([sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)]))
    shot = render(
        args.store,
        args.geojson,
        args.out,
        labels=args.labels,
        size=(args.height, args.width),
        box=args.box,
        outline_color=args.outline_color,
    )
    print(f"{args.out}: {shot.shape[1]} x {shot.shape[0]} px")


if __name__ == "__main__":
    main()
