"""Compare the experiments: each one's out-of-fold Dice, object F1, parameters, train and inference time."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from tilepipe.evaluation.dice import write_csv
from tilepipe.evaluation.experiments import benchmark_seconds, compare_experiments, plot_experiments
from tilepipe.model.checkpoint import checkpoint_settings, load_checkpoint
from tilepipe.provenance import record_job

names = list(snakemake.params.experiments)
benchmarks = snakemake.params.benchmarks
table = compare_experiments(
    dice_tables={
        name: pd.read_csv(p, dtype={"slide": str}) for name, p in zip(names, snakemake.input.dice, strict=True)
    },
    models={name: checkpoint_settings(p) for name, p in zip(names, snakemake.input.models, strict=True)},
    parameters={
        name: sum(p.numel() for p in load_checkpoint(path).parameters())
        for name, path in zip(names, snakemake.input.models, strict=True)
    },
    train_seconds={name: benchmark_seconds(benchmarks[name]["train"]) for name in names},
    predict_seconds={name: benchmark_seconds(benchmarks[name]["predict"]) for name in names},
    ensemble=snakemake.params.ensemble,
)
write_csv(table, snakemake.output.table)
plot_experiments(table, snakemake.output.plot, f"Experiments, out of fold ({snakemake.params.stage})")
print(table.to_string(index=False), file=sys.stderr)

record_job(snakemake)
