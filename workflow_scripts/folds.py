"""Assign the train slides to patient-grouped folds."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from pathlib import Path

import pandas as pd

from tilepipe.data.folds import make_folds, write_folds
from tilepipe.io.kaggle import KaggleDataset
from tilepipe.provenance import record_job

dataset = KaggleDataset(Path(snakemake.input.info).parent)
slides = pd.DataFrame(
    {
        "slide": snakemake.params.slides,
        "patient": [dataset.patient(s) for s in snakemake.params.slides],
        "n_masked": [int(pd.read_parquet(p, columns=["is_masked"])["is_masked"].sum()) for p in snakemake.input.tiles],
    }
)
folds = make_folds(
    slides,
    n_folds=snakemake.params.folds["n"],
    patients=snakemake.params.folds["patients"],
    seed=snakemake.params.seed,
    source=snakemake.input.info,
)
write_folds(folds, snakemake.output[0])

record_job(snakemake)
