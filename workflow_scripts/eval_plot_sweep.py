"""Plot the out-of-fold threshold sweep of every stage."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from tilepipe.evaluation.plots import plot_threshold_sweep
from tilepipe.provenance import record_job

stages = snakemake.params.stages
sweeps = {stage: pd.read_csv(p) for stage, p in zip(stages, snakemake.input.sweeps, strict=False)}
thresholds = {
    stage: float(pd.read_csv(p)["threshold"].iloc[0]) for stage, p in zip(stages, snakemake.input.dice, strict=False)
}
plot_threshold_sweep(sweeps, thresholds, snakemake.output[0])

record_job(snakemake)
