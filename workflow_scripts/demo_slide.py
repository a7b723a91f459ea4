"""Render one demo slide: its TIFF, its polygons (train) and its true mask RLE."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

from tilepipe.demo.plan import plan_demo
from tilepipe.demo.write import write_demo_slide
from tilepipe.provenance import record_job

slides = {s.id: s for s in plan_demo(snakemake.params.demo, snakemake.params.seed)}
write_demo_slide(
    slides[snakemake.wildcards.slide],
    data_root=Path(snakemake.output.tiff).parent.parent,
    truth_dir=Path(snakemake.output.truth).parent,
    seed=snakemake.params.seed,
)

record_job(snakemake)
