"""Fit the stain reference: the lαβ statistics of every train slide's tissue, averaged (tilepipe.data.stain)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging
from pathlib import Path

from tilepipe.data.stain import fit_reference, slide_lab_stats, stats_downsample, write_reference
from tilepipe.errors import InputError
from tilepipe.provenance import record_job
from tilepipe.stores.slide import SlideStore

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

if snakemake.params.method != "reinhard":
    raise InputError(None, f"data.stain_normalisation: no reference to fit for {snakemake.params.method!r}")
threshold = snakemake.params.saturation_threshold
downsample = stats_downsample(**snakemake.params.geometry)  # the scale training reads tiles at
stats = {Path(p).stem: slide_lab_stats(SlideStore(p), threshold, downsample) for p in snakemake.input.stores}
for slide, slide_stats in stats.items():
    logging.info("%s: %s", slide, slide_stats)
reference = fit_reference(stats, threshold, downsample)
logging.info("reference lab mean %s std %s", reference["lab_mean"], reference["lab_std"])
write_reference(snakemake.output.reference, reference)

record_job(snakemake)
