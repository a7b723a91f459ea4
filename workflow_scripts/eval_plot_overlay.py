"""Thumbnail of one slide with its predicted mask and its truth (labels, or the demo's held-back RLE) outlined."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.evaluation.dice import read_truth_rows
from tilepipe.evaluation.plots import plot_overlay
from tilepipe.provenance import record_job
from tilepipe.stores.probability import foreground_cutoff, read_probability
from tilepipe.stores.slide import SlideStore

slide, stage = snakemake.wildcards.slide, snakemake.wildcards.stage
store = SlideStore(snakemake.input.store)
truth = store.labels
if snakemake.input.get("truth") is not None:
    truth = read_truth_rows(snakemake.input.truth, slide, store.shape)
threshold = snakemake.params.threshold
plot_overlay(
    snakemake.input.store,
    read_probability(snakemake.input.prediction),
    foreground_cutoff(threshold),
    snakemake.output[0],
    f"{slide}, {stage}: prediction at {threshold:g}" + ("" if truth is None else " and truth"),
    truth=truth,
)

record_job(snakemake)
