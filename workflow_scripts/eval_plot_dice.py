"""Plot one stage's out-of-fold Dice per slide."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from tilepipe.evaluation.plots import plot_slide_dice
from tilepipe.provenance import record_job

table = pd.read_csv(snakemake.input[0], dtype={"slide": str})
plot_slide_dice(table, snakemake.output[0], f"Out-of-fold Dice per slide, {snakemake.wildcards.stage}")

record_job(snakemake)
