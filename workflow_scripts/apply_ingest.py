"""Ingest one slide a user brought (rule apply_ingest): TIFF -> results/apply/{id}.zarr, no labels."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import cv2
import zarr

from tilepipe.data.ingest import ingest_slide
from tilepipe.provenance import record_job

zarr.config.set({"threading.max_workers": snakemake.threads})
cv2.setNumThreads(snakemake.threads)

pixel_size = ingest_slide(
    snakemake.input.tiff,
    snakemake.output[0],
    chunk=snakemake.params.ingest["chunk"],
    min_level_size=snakemake.params.ingest["min_level_size"],
    threads=snakemake.threads,
    assumed_mpp=snakemake.params.mpp,
)
print(f"pixel size: {pixel_size.mpp:.4f} um ({pixel_size.source})", file=sys.stderr)
record_job(snakemake)
