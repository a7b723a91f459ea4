"""One stage's out-of-fold evaluation: the threshold sweep, each slide's Dice and objects, and the gate sweep."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

import pandas as pd

from tilepipe.data.folds import read_folds
from tilepipe.errors import InputError
from tilepipe.evaluation.dice import evaluation_threshold, read_histogram, slide_dice, threshold_sweep, write_csv
from tilepipe.evaluation.gate import configured_objects, gate_sweep
from tilepipe.provenance import record_job

folds = read_folds(snakemake.input.folds)
histograms = {Path(p).stem: read_histogram(p) for p in snakemake.input.histograms}
held_out = set(folds.loc[folds["fold"] >= 0, "slide"])
if held_out != set(histograms):
    raise InputError(
        snakemake.input.folds, f"held-out slides {sorted(held_out)} differ from the evaluated {sorted(histograms)}"
    )
gates = pd.concat([pd.read_csv(p, dtype={"slide": str}) for p in snakemake.input.gates], ignore_index=True)
gates["note"] = gates["note"].fillna("")
sweep = threshold_sweep(histograms)
threshold = evaluation_threshold(sweep, snakemake.params.mode, snakemake.params.threshold)
write_csv(sweep, snakemake.output.sweep)
table = slide_dice(histograms, folds, threshold).merge(configured_objects(gates), on="slide", validate="one_to_one")
write_csv(table, snakemake.output.dice)
gate_table = gate_sweep(gates)
write_csv(gate_table, snakemake.output.gates)
print(f"{snakemake.wildcards.stage}: {len(histograms)} slides at threshold {threshold}", file=sys.stderr)
print(gate_table.drop(columns="note").to_string(index=False), file=sys.stderr)

record_job(snakemake)
