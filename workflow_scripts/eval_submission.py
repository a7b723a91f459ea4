"""The demo's submission against the held-back truth of its test slides: Dice and objects per test slide."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.evaluation.dice import submission_dice, write_csv
from tilepipe.evaluation.objects import submission_objects
from tilepipe.provenance import record_job
from tilepipe.stores.slide import SlideStore

shapes = {Path(p).stem: SlideStore(p).shape for p in snakemake.input.stores}
table = submission_dice(snakemake.input.submission, snakemake.input.truth, shapes)
objects = submission_objects(snakemake.input.submission, snakemake.input.truth, shapes)
table = table.merge(objects, on="id", validate="one_to_one")
write_csv(table, snakemake.output[0])
print(table.to_string(index=False), file=sys.stderr)

record_job(snakemake)
