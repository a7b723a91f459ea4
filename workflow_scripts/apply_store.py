"""One store per applied slide (rule apply_store): the ingested image (linked) with labels/glomeruli,
probability and uncertainty from its prediction -> results/apply/{id}.zarr."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import zarr

from tilepipe.provenance import record_job
from tilepipe.stores.assemble import assemble_apply_store

zarr.config.set({"threading.max_workers": snakemake.threads})

counts = assemble_apply_store(
    snakemake.input.store,
    snakemake.input.prediction,
    snakemake.output[0],
    snakemake.params.threshold,
    threads=snakemake.threads,
)
print(f"{snakemake.wildcards.slide}: {counts}", file=sys.stderr)
record_job(snakemake)
