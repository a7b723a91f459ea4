"""The demo's submission against the held-back truth of its test slides: Dice per test slide."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.evaluation.dice import submission_dice, write_csv
from tilepipe.provenance import record_job
from tilepipe.stores.slide import SlideStore

shapes = {Path(p).stem: SlideStore(p).shape for p in snakemake.input.stores}
table = submission_dice(snakemake.input.submission, snakemake.input.truth, shapes)
write_csv(table, snakemake.output[0])
print(table.to_string(index=False), file=sys.stderr)

record_job(snakemake)
