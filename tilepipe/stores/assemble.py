"""The store `snakemake apply` leaves per slide: the slide's image and its predicted labels in one NGFF image.

Layout of ``results/apply/{id}.zarr`` (docs/DESIGN-3-apply.md)::

    {id}.zarr/              attrs["ome"]: multiscales (axes c, y, x; scales in micrometres where the
                            pixel size is known) and omero, as a slide store's;
                            attrs["tilepipe"]: the slide store's (pixel_size, ...), plus content "apply",
                            threshold and the stores it was assembled from
        0, 1, 2, ...        image levels, (c, y, x) uint8: the ingested slide store's arrays, their chunk
                            files hard-linked (copied where a link fails, e.g. across file systems)
        labels/             attrs["ome"]["labels"] = ["glomeruli", "probability", "uncertainty"]
            glomeruli/      (y, x) uint8 0/1: probability >= threshold at level 0, each level the
                            2x2 maximum of the one before; value 1 in GLOMERULUS_RGB
            probability/    (y, x) uint8 round(p * 255), 2x2 mean levels: the prediction store's arrays
            uncertainty/    (y, x) uint8 round(min(2 sigma, 1) * 255), 2x2 mean levels: the prediction
                            store's spread (left out when the prediction has none)

Every label image has the slide's level shapes and NGFF ``image-label``
metadata (``source.image`` ``"../../"``: this store's image; colours;
``properties`` for the mask), so napari-ome-zarr opens the store as an
image and three label layers, and QuPath or ome-zarr readers find labels
where NGFF puts them. The glomerulus mask is the thresholded probability
itself: objects smaller than ``objects.min_area_um2`` are in the mask but not
in the GeoJSON.

Linked chunk files are shared with the stores they come from: the project
writes every store once, through :func:`tilepipe.atomic.atomic_output` (a new
tree renamed into place, never a file rewritten in place), so neither store
changes the other. The mask is written band by band; nothing holds more
than a band of rows.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zarr

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.stores.ngff import GLOMERULUS_RGB, create_labels, image_attrs, label_attrs, list_label
from tilepipe.stores.probability import ENCODING as PROBABILITY_ENCODING
from tilepipe.stores.probability import (
    PROBABILITY_COLORS,
    UNCERTAINTY_COLORS,
    UNCERTAINTY_ENCODING,
    UNCERTAINTY_GROUP,
    foreground_cutoff,
    read_probability,
    read_uncertainty,
    write_mask,
)
from tilepipe.stores.slide import LABEL_NAME, SlideStore

__all__ = ["APPLY_LABELS", "GLOMERULUS_COLORS", "assemble_apply_store", "link_or_copy"]

PROBABILITY_LABEL = "probability"
APPLY_LABELS = (LABEL_NAME, PROBABILITY_LABEL, UNCERTAINTY_GROUP)
GLOMERULUS_COLORS = ({"label-value": 1, "rgba": [*GLOMERULUS_RGB, 255]},)
GLOMERULUS_PROPERTIES = ({"label-value": 1, "class": "glomerulus"},)
METADATA_FILE = "zarr.json"


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link the file ``source`` at ``target``, or copy it where the file system refuses a link.

    Returns True for a link, False for a copy.
    """
    try:
        os.link(source, target)
    except OSError:  # EXDEV (another file system), EPERM (no links there), EMLINK (too many)
        shutil.copy2(source, target)
        return False
    return True


def share_array(source: Path, target: Path) -> dict[str, int]:
    """Make the zarr array folder ``source`` appear at ``target``: chunk files linked (or copied), its
    ``zarr.json`` copied (metadata stays each store's own). Returns the counts ``{"linked", "copied"}``."""
    counts = {"linked": 0, "copied": 0}
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            if Path(folder) == source and name == METADATA_FILE:
                shutil.copy2(Path(folder, name), destination / name)
                continue
            counts["linked" if link_or_copy(Path(folder, name), destination / name) else "copied"] += 1
    return counts


def level_paths(group: zarr.Group, path: Path) -> list[str]:
    """The array paths of the levels of the NGFF multiscale image (or label image) ``group`` at ``path``."""
    try:
        return [dataset["path"] for dataset in group.attrs["ome"]["multiscales"][0]["datasets"]]
    except (KeyError, IndexError, TypeError) as err:
        raise InputError(path, "no OME-NGFF multiscales metadata") from err


def assemble_apply_store(
    slide_store: str | os.PathLike,
    prediction_store: str | os.PathLike,
    out_path: str | os.PathLike,
    threshold: float,
    *,
    threads: int = 1,
) -> dict[str, int]:
    """Write the apply store ``out_path``: the image of ``slide_store`` with the labels of ``prediction_store``.

    ``slide_store``: an ingested slide store (``results/apply/slides/{id}.zarr``);
    ``prediction_store``: its probability store (same level shapes); ``threshold``
    (0..1): the mask is ``p >= threshold`` (:func:`foreground_cutoff`);
    ``threads``: threads encoding the mask's chunks. The store appears
    atomically (nothing at ``out_path`` if this fails). Returns counts: image and
    label chunk files ``linked`` and ``copied``, ``foreground_px`` (level-0 pixels
    of the mask). Raises InputError naming the prediction store when it does not
    match the slide.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    slide_path, prediction_path, out_path = Path(slide_store), Path(prediction_store), Path(out_path)
    store = SlideStore(slide_path)
    probability = read_probability(prediction_path)
    spread = read_uncertainty(prediction_path)
    shapes = store.level_shapes
    prediction = zarr.open_group(prediction_path, mode="r")
    sources = {PROBABILITY_LABEL: (prediction, prediction_path, PROBABILITY_COLORS)}
    if spread is not None:
        sources[UNCERTAINTY_GROUP] = (
            prediction[UNCERTAINTY_GROUP],
            prediction_path / UNCERTAINTY_GROUP,
            UNCERTAINTY_COLORS,
        )
    for name, (group, path, _) in sources.items():
        found = [tuple(group[level].shape) for level in level_paths(group, path)]
        if found != shapes:
            raise InputError(path, f"{name} level shapes {found} differ from the slide's {shapes} ({slide_path})")
    cutoff = foreground_cutoff(threshold)
    image_levels = [dataset["path"] for dataset in store.multiscale["datasets"]]
    chunk = store.levels[0].chunks[-1]
    band_rows = store.levels[0].chunks[-2]
    counts = {"linked": 0, "copied": 0, "foreground_px": 0}

    def add(shared: dict[str, int]) -> None:
        for key, value in shared.items():
            counts[key] += value

    with atomic_output(out_path) as tmp, ThreadPoolExecutor(threads) as pool:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs["ome"] = image_attrs(out_path.stem, len(image_levels))
        for index, level in enumerate(image_levels):  # named "0", "1", ... as image_attrs lists them
            add(share_array(slide_path / level, tmp / str(index)))

        mask = create_labels(root, LABEL_NAME, shapes, chunk=chunk, pool=pool)
        labels = root["labels"]
        labels[LABEL_NAME].attrs["ome"] = label_attrs(
            LABEL_NAME, len(shapes), colors=GLOMERULUS_COLORS, properties=GLOMERULUS_PROPERTIES
        )
        counts["foreground_px"] = write_mask(probability, threshold, mask, band_rows)

        for name, (group, path, colors) in sources.items():
            list_label(labels, name)
            label = labels.create_group(name)
            paths = level_paths(group, path)
            label.attrs["ome"] = label_attrs(name, len(paths), colors=colors, downsampling="2x2 mean")
            for index, level in enumerate(paths):
                add(share_array(path / level, tmp / "labels" / name / str(index)))

        root.attrs["tilepipe"] = {
            **store.group.attrs.get("tilepipe", {}),
            "content": "apply",
            "image": slide_path.name,
            "prediction": prediction_path.name,
            "threshold": threshold,
            "labels": {
                LABEL_NAME: f"uint8 0/1: probability >= {threshold} (stored value >= {cutoff}), 2x2 max levels",
                PROBABILITY_LABEL: f"{PROBABILITY_ENCODING}, 2x2 mean levels",
                **({UNCERTAINTY_GROUP: f"{UNCERTAINTY_ENCODING}, 2x2 mean levels"} if spread is not None else {}),
            },
        }
        store.copy_pixel_size_to(zarr.open_group(tmp, mode="r+"))
    return counts
