"""Build the tile index of one slide store."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.tile_index import build_tile_index, write_tile_index

tiles = snakemake.params.tiles
index = build_tile_index(
    snakemake.input[0],
    snakemake.wildcards.slide,
    size=tiles["size"],
    shift=tiles["shift"],
    saturation_threshold=tiles["saturation_threshold"],
)
write_tile_index(index, snakemake.output[0])
