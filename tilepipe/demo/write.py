"""Writing the embedded demo: slide TIFFs in the Kaggle data's layouts, polygons, truth RLEs and the dataset tables.

Under a data root it writes the layout of Kaggle's
``hubmap-kidney-segmentation`` (DESIGN section 2)::

    train/{id}.tiff, train/{id}.json    every train slide has its polygons
    train.csv                            id,encoding: only label_source "rle" slides
    test/{id}.tiff, external/{id}.tiff
    sample_submission.csv                id,predicted (empty), in a fixed unsorted order
    HuBMAP-20-dataset_information.csv    one row per train and test slide

and, outside the data root, ``{truth_dir}/{id}.rle`` (the true mask of every
slide, one line) and a truth CSV of the test slides. Two runs write
byte-identical files.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from tilepipe.atomic import atomic_output
from tilepipe.demo.plan import CORTEX_STREAM, DONOR_STREAM, DemoSlide
from tilepipe.demo.render import render_slide
from tilepipe.io.polygons import write_polygons
from tilepipe.io.rle import encode

__all__ = ["demo_paths", "submission_order", "write_demo_slide", "write_demo_tables", "write_tiff"]


_TILE = (256, 256)


_PYRAMID_LEVELS = 2  # reduced levels below level 0 in "pyramid_subifds"


_JPEG_QUALITY = 90


_INFO_COLUMNS = [
    "image_file",
    "width_pixels",
    "height_pixels",
    "anatomical_structures_segmention_file",
    "glomerulus_segmentation_file",
    "patient_number",
    "race",
    "ethnicity",
    "sex",
    "age",
    "weight_kilograms",
    "height_centimeters",
    "bmi_kg/m^2",
    "laterality",
    "percent_cortex",
    "percent_medulla",
]


def write_tiff(path: str | os.PathLike, image: np.ndarray, layout: str) -> None:
    """Write ``image`` ((y, x, c) uint8 RGB) to ``path`` in ``layout`` (one of :data:`LAYOUTS`), atomically."""
    height = image.shape[0]
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))
    rgb: dict[str, Any] = {"photometric": "rgb"}
    tiled = {**rgb, "tile": _TILE, "compression": "zlib"}
    with atomic_output(path) as tmp:
        if layout == "planar5d":
            tifffile.imwrite(tmp, planar[None, None], planarconfig="separate", **rgb)
        elif layout == "planar3":
            tifffile.imwrite(tmp, planar, planarconfig="separate", compression="lzw", rowsperstrip=128, **rgb)
        elif layout == "tiled_bigtiff":
            tifffile.imwrite(tmp, image, bigtiff=True, **tiled)
        elif layout == "pyramid_subifds":
            with tifffile.TiffWriter(tmp) as tif:
                tif.write(image, subifds=_PYRAMID_LEVELS, **tiled)
                level = image
                for _ in range(_PYRAMID_LEVELS):
                    size = ((level.shape[1] + 1) // 2, (level.shape[0] + 1) // 2)
                    level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
                    tif.write(level, subfiletype=1, **tiled)
        elif layout == "jpeg_tiles":
            tifffile.imwrite(
                tmp, image, tile=_TILE, compression="jpeg", compressionargs={"level": _JPEG_QUALITY}, **rgb
            )
        elif layout == "single_strip":
            tifffile.imwrite(tmp, image, rowsperstrip=height, **rgb)
        elif layout == "lzw_strips":
            tifffile.imwrite(tmp, image, compression="lzw", rowsperstrip=64, **rgb)
        else:
            raise ValueError(f"unknown layout {layout!r}")


def demo_paths(slide: DemoSlide, data_root: str | os.PathLike, truth_dir: str | os.PathLike) -> dict[str, Path]:
    """Return the files :func:`write_demo_slide` writes: "tiff", "truth" and, for train slides, "polygons"."""
    folder = Path(data_root) / slide.split
    paths = {"tiff": folder / f"{slide.id}.tiff", "truth": Path(truth_dir) / f"{slide.id}.rle"}
    if slide.split == "train":
        paths["polygons"] = folder / f"{slide.id}.json"
    return paths


def write_demo_slide(slide: DemoSlide, data_root: str | os.PathLike, truth_dir: str | os.PathLike, seed: int) -> None:
    """Render ``slide`` and write its TIFF, its polygons (train slides) and ``{truth_dir}/{id}.rle``.

    The RLE file holds the Kaggle RLE of the true mask on one line. Every
    file appears atomically.
    """
    paths = demo_paths(slide, data_root, truth_dir)
    rendered = render_slide(slide, seed)
    write_tiff(paths["tiff"], rendered.image, slide.layout)
    if "polygons" in paths:
        write_polygons(paths["polygons"], rendered.polygons)
    with atomic_output(paths["truth"]) as tmp:
        tmp.write_text(encode(rendered.mask) + "\n")


def submission_order(slides: Iterable[DemoSlide]) -> list[DemoSlide]:
    """Return the test slides in sample_submission order: plan order, never sorted by id.

    Plan order is unrelated to id order; if it happens to be sorted it is
    rotated by one, so code that sorts ids is caught.
    """
    tests = [s for s in slides if s.split == "test"]
    if len(tests) > 1 and [s.id for s in tests] == sorted(s.id for s in tests):
        tests = tests[1:] + tests[:1]
    return tests


def write_demo_tables(
    slides: Iterable[DemoSlide],
    data_root: str | os.PathLike,
    truth_dir: str | os.PathLike,
    truth_csv: str | os.PathLike,
) -> None:
    """Write train.csv, sample_submission.csv and HuBMAP-20-dataset_information.csv under
    ``data_root``, and ``truth_csv`` (id,predicted of the test slides in submission order).

    Reads the RLEs from ``{truth_dir}/{id}.rle``, written by :func:`write_demo_slide`.
    """
    slides = list(slides)
    data_root = Path(data_root)

    def truth(slide: DemoSlide) -> str:
        return (Path(truth_dir) / f"{slide.id}.rle").read_text().strip()

    rle_slides = sorted((s for s in slides if s.label_source == "rle"), key=lambda s: s.id)
    _write_csv(data_root / "train.csv", ["id", "encoding"], [[s.id, truth(s)] for s in rle_slides])
    tests = submission_order(slides)
    _write_csv(data_root / "sample_submission.csv", ["id", "predicted"], [[s.id, ""] for s in tests])
    _write_csv(truth_csv, ["id", "predicted"], [[s.id, truth(s)] for s in tests])
    described = [s for s in slides if s.split in ("train", "test")]
    _write_csv(data_root / "HuBMAP-20-dataset_information.csv", _INFO_COLUMNS, [_info_row(s) for s in described])


def _info_row(slide: DemoSlide) -> list[Any]:
    """One row of the dataset information table; donor facts are a pure function of the patient."""
    donor = np.random.default_rng([slide.patient, DONOR_STREAM])
    weight = round(float(donor.uniform(55, 120)), 1)
    height_cm = round(float(donor.uniform(150, 195)), 1)
    race = ["White", "Black or African American", "Asian"][int(donor.integers(3))]
    ethnicity = ["Not Hispanic or Latino", "Hispanic or Latino"][int(donor.random() < 0.15)]
    sex = ["Male", "Female"][int(donor.integers(2))]
    age = int(donor.integers(25, 80))
    laterality = ["Left", "Right"][int(donor.integers(2))]
    cortex = int(np.random.default_rng([slide.patient, CORTEX_STREAM, slide.index]).integers(55, 101))
    return [
        f"{slide.id}.tiff",
        slide.width,
        slide.height,
        "",
        f"{slide.id}.json" if slide.split == "train" else "",
        slide.patient,
        race,
        ethnicity,
        sex,
        age,
        weight,
        height_cm,
        round(weight / (height_cm / 100) ** 2, 1),
        laterality,
        cortex,
        100 - cortex,
    ]


def _write_csv(path: str | os.PathLike, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
