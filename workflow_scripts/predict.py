"""Predict one slide with a stage's fold ensemble (a train slide: only the fold that held it out)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

import torch

from tilepipe.data.folds import read_folds
from tilepipe.inference.predict import predict_slide
from tilepipe.model import load_checkpoint
from tilepipe.provenance import record_job

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
torch.set_num_threads(snakemake.threads)

folds = read_folds(snakemake.input.folds).set_index("slide")["fold"]
slide = snakemake.wildcards.slide
paths = list(snakemake.input.models)
if slide in folds.index:
    paths = [p for p in paths if p.endswith(f"/fold{folds[slide]}/model.pt")]
    if not paths:
        raise ValueError(f"train slide {slide} is in no held-out fold: it has no out-of-fold model")
settings = snakemake.params.inference
stats = predict_slide(
    snakemake.input.store,
    snakemake.output[0],
    [load_checkpoint(p) for p in paths],
    tile_size=settings["tile_size"],
    input_size=settings["input_size"],
    read_level=settings["read_level"],
    tta=settings["tta"],
    clf_threshold=settings["clf_threshold"],
    min_tissue=settings["min_tissue"],
    saturation_threshold=settings["saturation_threshold"],
    batch_size=settings["batch_size"],
    device=snakemake.params.device,
    amp=snakemake.params.amp,
)
print(f"{slide}: models {paths}; {stats}", file=sys.stderr)

record_job(snakemake)
