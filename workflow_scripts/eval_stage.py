"""One stage's out-of-fold Dice: the threshold sweep and each slide's Dice at the evaluation threshold."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.data.folds import read_folds
from tilepipe.errors import InputError
from tilepipe.evaluation.dice import evaluation_threshold, read_histogram, slide_dice, threshold_sweep, write_csv
from tilepipe.provenance import record_job

folds = read_folds(snakemake.input.folds)
histograms = {Path(p).stem: read_histogram(p) for p in snakemake.input.histograms}
held_out = set(folds.loc[folds["fold"] >= 0, "slide"])
if held_out != set(histograms):
    raise InputError(
        snakemake.input.folds, f"held-out slides {sorted(held_out)} differ from the evaluated {sorted(histograms)}"
    )
sweep = threshold_sweep(histograms)
threshold = evaluation_threshold(sweep, snakemake.params.mode, snakemake.params.threshold)
write_csv(sweep, snakemake.output.sweep)
write_csv(slide_dice(histograms, folds, threshold), snakemake.output.dice)
print(f"{snakemake.wildcards.stage}: {len(histograms)} slides at threshold {threshold}", file=sys.stderr)

record_job(snakemake)
