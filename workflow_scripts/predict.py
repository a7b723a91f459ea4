"""Predict one slide with a stage's fold ensemble (a train slide: only the fold that held it out)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

import torch

from tilepipe.config import RUNTIME_KEYS
from tilepipe.data.folds import read_folds
from tilepipe.inference.members import models_for_slide
from tilepipe.inference.predict import predict_slide
from tilepipe.model import load_checkpoint
from tilepipe.provenance import record_job

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
torch.set_num_threads(snakemake.threads)

slide = snakemake.wildcards.slide
folds = read_folds(snakemake.input.folds).set_index("slide")["fold"].to_dict()
paths = models_for_slide(snakemake.input.models, folds, slide, snakemake.input.folds)
runtime = {k: snakemake.config["inference"][k] for k in RUNTIME_KEYS["inference"]}  # not params: speed only
stats = predict_slide(
    snakemake.input.store,
    snakemake.output[0],
    [load_checkpoint(p) for p in paths],
    **snakemake.params.inference,
    **runtime,
    device=snakemake.params.device,
)
print(f"{slide}: models {paths}; {stats}", file=sys.stderr)

record_job(snakemake)
