"""One train slide's out-of-fold prediction against its labels: the value histogram (gated as configured) and the gate sweep."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.evaluation.dice import write_csv, write_histogram
from tilepipe.evaluation.gate import evaluate_slide
from tilepipe.provenance import record_job

histogram, gates = evaluate_slide(
    snakemake.input.prediction,
    snakemake.input.store,
    snakemake.input.windows,
    threshold=snakemake.params.threshold,
    clf_threshold=snakemake.params.clf_threshold,
)
write_histogram(histogram, snakemake.output.histogram)
write_csv(gates, snakemake.output.gates)
pixels, true = int(histogram.pixels.sum()), int(histogram.truth.sum())
print(f"{snakemake.wildcards.slide}: {pixels} pixels, {true} in the truth", file=sys.stderr)
print(gates.drop(columns=["slide", "note"]).to_string(index=False), file=sys.stderr)
for note in set(gates["note"]) - {""}:
    print(f"note: {note}", file=sys.stderr)

record_job(snakemake)
