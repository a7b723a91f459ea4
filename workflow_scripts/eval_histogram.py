"""Histogram one train slide's out-of-fold probability against its labels (Dice at every threshold)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.evaluation.dice import slide_histogram, write_histogram
from tilepipe.provenance import record_job

histogram = slide_histogram(snakemake.input.prediction, snakemake.input.store)
write_histogram(histogram, snakemake.output[0])
pixels, true = int(histogram.pixels.sum()), int(histogram.truth.sum())
print(f"{snakemake.wildcards.slide}: {pixels} pixels, {true} in the truth", file=sys.stderr)

record_job(snakemake)
