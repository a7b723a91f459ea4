"""The glomeruli of one slide's final prediction: a QuPath GeoJSON and an object table (rule objects)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import math

from tilepipe.objects.export import write_objects
from tilepipe.provenance import record_job
from tilepipe.stores.probability import foreground_cutoff, read_probability, read_uncertainty
from tilepipe.stores.slide import SlideStore

size = SlideStore(snakemake.input.store).pixel_size(snakemake.params.mpp)
min_area = max(1, math.ceil(snakemake.params.min_area_um2 / (size.x_um * size.y_um)))
rows = write_objects(
    read_probability(snakemake.input.prediction),
    foreground_cutoff(snakemake.params.threshold),
    snakemake.output.geojson,
    snakemake.output.table,
    slide_id=snakemake.wildcards.slide,
    mpp=size.mpp,
    min_area=min_area,
    uncertainty=read_uncertainty(snakemake.input.prediction),
)
print(f"{snakemake.wildcards.slide}: {len(rows)} objects of at least {min_area} px; pixel size {size}", file=sys.stderr)
record_job(snakemake)
