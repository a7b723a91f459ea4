"""Build the tile index of one slide store (with its pseudo-labels when given: masked tiles only)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.data.tile_index import build_tile_index, write_tile_index
from tilepipe.provenance import record_job

tiles = snakemake.params.tiles
pseudo = snakemake.input.get("labels") is not None
index = build_tile_index(
    snakemake.input[0],
    snakemake.wildcards.slide,
    size=tiles["size"],
    shift=tiles["shift"],
    saturation_threshold=tiles["saturation_threshold"],
    labels_path=snakemake.input.labels if pseudo else None,
)
if pseudo:
    index = index[index["is_masked"]].reset_index(drop=True)
write_tile_index(index, snakemake.output[0])

record_job(snakemake)
