"""Summarise the evaluation: Dice and objects per stage and fold, the gate, the demo's submission; the final stage's threshold."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from tilepipe.atomic import atomic_output
from tilepipe.evaluation.dice import write_csv
from tilepipe.evaluation.summary import summarize
from tilepipe.provenance import record_job

stages = snakemake.params.stages
tables = {stage: pd.read_csv(p, dtype={"slide": str}) for stage, p in zip(stages, snakemake.input.dice, strict=True)}
sweeps = {stage: pd.read_csv(p) for stage, p in zip(stages, snakemake.input.sweeps, strict=True)}
gates = {stage: pd.read_csv(p) for stage, p in zip(stages, snakemake.input.gates, strict=True)}
submission = pd.read_csv(snakemake.input.submission[0], dtype={"id": str}) if snakemake.input.submission else None
summary = summarize(
    tables,
    sweeps,
    submission=submission,
    submission_stage=snakemake.params.final_stage,
    submission_threshold=snakemake.params.submission_threshold,
    gate_sweeps=gates,
    submission_gate=snakemake.params.submission_gate,
)
write_csv(summary, snakemake.output.summary)
with atomic_output(snakemake.output.threshold) as tmp:
    tmp.write_text(f"{float(tables[snakemake.params.final_stage]['threshold'].iloc[0])}\n")
print(summary.to_string(index=False), file=sys.stderr)
for stage, table in gates.items():
    for note in set(table["note"].dropna()):
        print(f"{stage} gate sweep: {note}", file=sys.stderr)

record_job(snakemake)
