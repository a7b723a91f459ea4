"""The segmentation networks: the 1st-place U-Net (encoders, decoder, heads), smp architectures, timm backbones, checkpoints."""

from tilepipe.model.build import DEFAULT_SETTINGS, build_model, resolve_settings
from tilepipe.model.checkpoint import (
    GEOMETRY_KEYS,
    checkpoint_geometry,
    checkpoint_settings,
    ensemble_geometry,
    load_checkpoint,
    load_ensemble,
    read_checkpoint,
    save_checkpoint,
)
from tilepipe.model.encoders import ENCODERS
from tilepipe.model.first_place import FIRST_PLACE_SETTINGS, import_first_place
from tilepipe.model.smp_network import SmpNetwork
from tilepipe.model.unet import Unet

__all__ = [
    "DEFAULT_SETTINGS",
    "GEOMETRY_KEYS",
    "ENCODERS",
    "FIRST_PLACE_SETTINGS",
    "SmpNetwork",
    "Unet",
    "build_model",
    "checkpoint_geometry",
    "checkpoint_settings",
    "ensemble_geometry",
    "import_first_place",
    "load_checkpoint",
    "load_ensemble",
    "read_checkpoint",
    "resolve_settings",
    "save_checkpoint",
]
