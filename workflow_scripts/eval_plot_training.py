"""Plot one stage's training curves: a panel per fold."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import re

import pandas as pd

from tilepipe.evaluation.plots import plot_training_curves
from tilepipe.provenance import record_job

metrics = {int(re.search(r"/fold(\d+)/", p).group(1)): pd.read_csv(p) for p in snakemake.input}
plot_training_curves(metrics, snakemake.output[0], f"Training, {snakemake.wildcards.stage}")

record_job(snakemake)
