"""Threshold the stage-1 ensemble's prediction of one slide into its pseudo-label store."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import zarr

from tilepipe.inference.pseudo import write_pseudo_labels
from tilepipe.provenance import record_job

# zarr decodes the prediction's chunks in its own executor: keep it within the job's threads too.
zarr.config.set({"threading.max_workers": snakemake.threads})

pixels = write_pseudo_labels(
    snakemake.input.store,
    snakemake.input.prediction,
    snakemake.output[0],
    snakemake.params.threshold,
    threads=snakemake.threads,
)
print(f"{snakemake.wildcards.slide}: {pixels} pseudo-labelled pixels", file=sys.stderr)

record_job(snakemake)
