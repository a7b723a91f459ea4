"""Predict one slide with a stage's fold ensemble (a train slide: only the fold that held it out); for
rule apply_predict (no folds.csv input), a slide a user brought with every model."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

from tilepipe.gpu_slots import claim_gpu

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
gpu = claim_gpu(timeout=float("inf"))  # before torch starts CUDA; wait for a free GPU (tilepipe.gpu_slots)
logging.info("GPU: %s", gpu.describe())


import torch

from tilepipe.config import RUNTIME_KEYS
from tilepipe.data.folds import read_folds
from tilepipe.inference.members import models_for_slide
from tilepipe.inference.predict import predict_with_checkpoints
from tilepipe.provenance import record_job
from tilepipe.resources import bound_heap_growth

torch.set_num_threads(snakemake.threads)
bound_heap_growth()  # batches of varying size would otherwise grow glibc's heap (tilepipe.resources)

slide = snakemake.wildcards.slide
paths = list(snakemake.input.models)
if snakemake.input.get("folds") is not None:
    folds = read_folds(snakemake.input.folds).set_index("slide")["fold"].to_dict()
    paths = models_for_slide(paths, folds, slide, snakemake.input.folds)
runtime = {k: snakemake.config["inference"][k] for k in RUNTIME_KEYS["inference"]}  # not params: speed only
# The models' own input geometry (tile size, input size, read level, normalisation) replaces
# the config's, members must agree on it, and windows follow the slide's pixel size.
stats, notes = predict_with_checkpoints(
    snakemake.input.store,
    snakemake.output[0],
    paths,
    snakemake.params.inference,
    assumed_mpp=snakemake.params.mpp,
    **runtime,
    device=snakemake.params.device,
    windows_path=snakemake.output.windows,
)
for note in notes:
    logging.info(note)
print(f"{slide}: models {paths}; {stats}", file=sys.stderr)

record_job(snakemake, device=gpu.describe())
