"""Predict one slide a user brought with the whole fold ensemble (rule apply_predict)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

from tilepipe.gpu_slots import claim_gpu

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
gpu = claim_gpu(timeout=float("inf"))  # before torch starts CUDA; wait for a free GPU (tilepipe.gpu_slots)
logging.info("GPU: %s", gpu.describe())

import torch

from tilepipe.config import RUNTIME_KEYS
from tilepipe.inference.predict import predict_slide
from tilepipe.inference.settings import with_geometry
from tilepipe.model import load_ensemble
from tilepipe.provenance import record_job
from tilepipe.resources import bound_heap_growth
from tilepipe.stores.slide import SlideStore

torch.set_num_threads(snakemake.threads)
bound_heap_growth()  # batches of varying size would otherwise grow glibc's heap (tilepipe.resources)

runtime = {k: snakemake.config["inference"][k] for k in RUNTIME_KEYS["inference"]}  # not params: speed only
models, geometry = load_ensemble(list(snakemake.input.models))
pixel_size = SlideStore(snakemake.input.store).pixel_size(snakemake.params.mpp)
logging.info("pixel size %.4g um (%s)", pixel_size.mpp, pixel_size.source)
settings, changes = with_geometry(snakemake.params.inference, geometry, pixel_size.mpp)
for change in changes:
    logging.warning("the checkpoints' geometry replaces the config's %s", change)
stats = predict_slide(
    snakemake.input.store, snakemake.output[0], models, **settings, **runtime, device=snakemake.params.device
)
print(f"{snakemake.wildcards.slide}: {len(models)} models; {stats}", file=sys.stderr)
record_job(snakemake, device=gpu.describe())
