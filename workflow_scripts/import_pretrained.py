"""Take one stage-1 fold model from the pretrained.stage1 folder (a tilepipe checkpoint or a 1st-place state dict)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from tilepipe.model.pretrained import import_pretrained
from tilepipe.provenance import record_job

done = import_pretrained(snakemake.input.model, snakemake.output.model)
print(f"fold {snakemake.wildcards.fold}: {done}", file=sys.stderr)

record_job(snakemake)
