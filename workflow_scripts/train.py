"""Train one fold: tile indices + folds + slide stores -> best checkpoint and metrics."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

from tilepipe.gpu_slots import claim_gpu

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
gpu = claim_gpu(timeout=float("inf"))  # before torch starts CUDA; wait for a free GPU (tilepipe.gpu_slots)
logging.info("GPU: %s", gpu.describe())

from pathlib import Path

import pandas as pd
import torch

from tilepipe.config import RUNTIME_KEYS
from tilepipe.data.folds import read_folds
from tilepipe.data.stain import read_reference
from tilepipe.provenance import record_job
from tilepipe.training.trainer import train_fold

torch.set_num_threads(max(1, snakemake.threads - snakemake.config["train"]["num_workers"]))

settings = dict(snakemake.params.settings)
runtime = {k: snakemake.config["train"][k] for k in RUNTIME_KEYS["train"]}  # not params: speed only
settings["train"] = {**settings["train"], **runtime}
pseudo = snakemake.input.get("pseudo_tiles") is not None
train_fold(
    tiles=pd.concat([pd.read_parquet(p) for p in snakemake.input.tiles], ignore_index=True),
    folds=read_folds(snakemake.input.folds),
    stores={Path(p).stem: p for p in [*snakemake.input.stores, *snakemake.input.get("pseudo_stores", [])]},
    fold=int(snakemake.wildcards.fold),
    settings=settings,
    model_path=snakemake.output.model,
    metrics_path=snakemake.output.metrics,
    state_path=snakemake.params.state,
    pseudo_tiles=pd.concat([pd.read_parquet(p) for p in snakemake.input.pseudo_tiles]) if pseudo else None,
    pseudo_labels={Path(p).stem: p for p in snakemake.input.pseudo_labels} if pseudo else None,
    init_path=snakemake.input.get("init"),
    stain_reference=read_reference(snakemake.input.stain) if snakemake.input.get("stain") else None,
)

record_job(snakemake, runtime=("state",), device=gpu.describe())
