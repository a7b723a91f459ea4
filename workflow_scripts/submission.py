"""Write results/submission.csv from the final stage's test predictions."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.evaluation.submission import write_submission
from tilepipe.provenance import record_job

write_submission(
    snakemake.input.sample,
    {Path(p).stem: p for p in snakemake.input.predictions},
    snakemake.params.threshold,
    snakemake.output[0],
)

record_job(snakemake)
