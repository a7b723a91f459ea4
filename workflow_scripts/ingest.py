"""Ingest one slide: TIFF (+ RLE or polygons from the dataset) -> results/slides/{id}.zarr; a slide a user
brought (rule apply_ingest, no dataset tables) -> results/apply/slides/{id}.zarr without labels."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

import cv2
import zarr

from tilepipe.data.ingest import ingest_slide
from tilepipe.io.kaggle import TRAIN_CSV, KaggleDataset
from tilepipe.provenance import record_job

# zarr's own executor (metadata writes here) stays within the job's threads too.
zarr.config.set({"threading.max_workers": snakemake.threads})
# OpenCV (pyramid downsampling) would otherwise use a thread per CPU.
cv2.setNumThreads(snakemake.threads)

slide_id = snakemake.wildcards.slide
labels = {}
if snakemake.input.get("tables") is not None:
    dataset = KaggleDataset(Path(snakemake.input.tables[0]).parent)
    labels = {
        "rle": dataset.rle(slide_id),
        "label_source": f"{dataset.root / TRAIN_CSV} (id {slide_id})",
        "polygons_path": dataset.polygons_path(slide_id),
        "polygon_coordinates": snakemake.params.ingest["polygon_coordinates"],
        "expected_shape": dataset.expected_shape(slide_id),
    }
pixel_size = ingest_slide(
    snakemake.input.tiff,
    snakemake.output[0],
    **labels,
    chunk=snakemake.params.ingest["chunk"],
    min_level_size=snakemake.params.ingest["min_level_size"],
    threads=snakemake.threads,
    assumed_mpp=snakemake.params.mpp,
)
print(f"pixel size: {pixel_size.mpp:.4f} um ({pixel_size.source})", file=sys.stderr)

record_job(snakemake)
