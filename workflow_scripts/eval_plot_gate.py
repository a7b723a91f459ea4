"""Plot the out-of-fold classification-gate sweep of every stage: Dice and recall against time saved."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from tilepipe.evaluation.plots import plot_gate_sweep
from tilepipe.provenance import record_job

stages = snakemake.params.stages
plot_gate_sweep({stage: pd.read_csv(p) for stage, p in zip(stages, snakemake.input, strict=True)}, snakemake.output[0])

record_job(snakemake)
