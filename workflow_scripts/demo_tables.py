"""Write the demo's CSVs: train.csv, sample_submission.csv, dataset information, truth."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.demo.plan import plan_demo
from tilepipe.demo.write import write_demo_tables
from tilepipe.provenance import record_job

write_demo_tables(
    plan_demo(snakemake.params.demo, snakemake.params.seed),
    data_root=Path(snakemake.output.info).parent,
    truth_dir=Path(snakemake.input.truth[0]).parent,
    truth_csv=snakemake.output.truth,
)

record_job(snakemake)
