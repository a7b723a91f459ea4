"""One row per slide from the object tables: results/objects/summary.csv (rule objects_summary)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

import pandas as pd

from tilepipe.objects.summary import slide_summary, write_summary
from tilepipe.provenance import record_job
from tilepipe.stores.slide import SlideStore

rows = []
for table_path, store_path in zip(snakemake.input.tables, snakemake.input.stores, strict=True):
    slide_id = Path(table_path).stem
    size = SlideStore(store_path).pixel_size(snakemake.params.mpp)
    rows.append(slide_summary(slide_id, pd.read_csv(table_path), size.mpp, size.source))
write_summary(snakemake.output[0], rows)
record_job(snakemake)
