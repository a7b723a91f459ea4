"""Encoders: a classification backbone cut into five stages (strides 2, 4, 8, 16, 32).

Each encoder is built from its library's original model (pretrainedmodels'
SE-ResNeXt, torchvision's ResNet) so that weight files and ImageNet weights
keep that library's keys; the classifier at the end is dropped after loading.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tilepipe.errors import InputError
from tilepipe.model.state_dicts import load_state_dict_checked, read_torch_file

IMAGENET = "imagenet"
DOWNLOAD_TIMEOUT = 60  # seconds one blocking network operation may take while fetching ImageNet weights


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one backbone and cut it into stages."""

    library: str
    build_original: Callable[[bool], nn.Module]  # argument: fetch ImageNet weights
    stages: Callable[[nn.Module], list[nn.Module]]
    out_channels: tuple[int, int, int, int, int]
    imagenet_url: Callable[[], str]


def _senet(name: str) -> Callable[[bool], nn.Module]:
    def build(imagenet: bool) -> nn.Module:
        import pretrainedmodels  # imports all of torchvision: only when an SE-ResNeXt is asked for

        return pretrainedmodels.__dict__[name](pretrained=IMAGENET if imagenet else None)

    return build


def _senet_url(name: str) -> Callable[[], str]:
    def url() -> str:
        import pretrainedmodels

        return pretrainedmodels.pretrained_settings[name][IMAGENET]["url"]

    return url


def _senet_stages(model: nn.Module) -> list[nn.Module]:
    layer0 = model.layer0
    return [
        nn.Sequential(layer0.conv1, layer0.bn1, layer0.relu1),
        nn.Sequential(layer0.pool, model.layer1),
        model.layer2,
        model.layer3,
        model.layer4,
    ]


def _resnet(name: str) -> Callable[[bool], nn.Module]:
    def build(imagenet: bool) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights="IMAGENET1K_V1" if imagenet else None)

    return build


def _resnet_url(name: str) -> Callable[[], str]:
    def url() -> str:
        import torchvision

        return torchvision.models.get_model_weights(name).IMAGENET1K_V1.url

    return url


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    return [
        nn.Sequential(model.conv1, model.bn1, model.relu),
        nn.Sequential(model.maxpool, model.layer1),
        model.layer2,
        model.layer3,
        model.layer4,
    ]


ENCODERS: dict[str, EncoderSpec] = {
    "se_resnext101_32x4d": EncoderSpec(
        "pretrainedmodels",
        _senet("se_resnext101_32x4d"),
        _senet_stages,
        (64, 256, 512, 1024, 2048),
        _senet_url("se_resnext101_32x4d"),
    ),
    "se_resnext50_32x4d": EncoderSpec(
        "pretrainedmodels",
        _senet("se_resnext50_32x4d"),
        _senet_stages,
        (64, 256, 512, 1024, 2048),
        _senet_url("se_resnext50_32x4d"),
    ),
    "resnet34": EncoderSpec(
        "torchvision",
        _resnet("resnet34"),
        _resnet_stages,
        (64, 64, 128, 256, 512),
        _resnet_url("resnet34"),
    ),
    "resnet18": EncoderSpec(
        "torchvision",
        _resnet("resnet18"),
        _resnet_stages,
        (64, 64, 128, 256, 512),
        _resnet_url("resnet18"),
    ),
}


class Encoder(nn.Module):
    """Five backbone stages; ``forward`` returns their outputs, finest first.

    For an input (b, c, h, w) the outputs have ``out_channels[i]`` channels and
    spatial size (h / 2**(i+1), w / 2**(i+1)).
    """

    def __init__(self, stages: list[nn.Module], out_channels: tuple[int, ...]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@contextmanager
def imagenet_download(name: str, source: str, local: str, cache: str) -> Iterator[None]:
    """Turn a failed download of ``name``'s ImageNet weights inside the block into an InputError that says what to do.

    ``source``: where the weights come from (a URL or a hub repository);
    ``local``: what a local file must hold; ``cache``: where the library
    looks for them before downloading. Blocking network operations of the
    block time out after :data:`DOWNLOAD_TIMEOUT` seconds (torch.hub's
    urlopen has none: a stalled link would hang forever).
    """
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        yield
    except OSError as err:  # URLError, timeouts, refused connections, unwritable cache, hub errors
        raise InputError(
            None,
            f"model.encoder_weights: could not download the ImageNet weights of {name} "
            f"from {source} ({type(err).__name__}: {err}). Offline, download that file "
            f"elsewhere and set model.encoder_weights to its local path ({local}), or put it in {cache}.",
        ) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _fetch_imagenet(name: str, spec: EncoderSpec) -> nn.Module:
    with imagenet_download(
        name, spec.imagenet_url(), f"a state dict of the {name} model of {spec.library}", "$TORCH_HOME/hub/checkpoints/"
    ):
        return spec.build_original(True)


def original_model(name: str, weights: str | os.PathLike | None) -> nn.Module:
    """Return the library's original model of ``name`` (a key of ENCODERS), classifier included, with ``weights``.

    ``weights`` as for :func:`build_encoder`. Bad files and failed downloads raise InputError.
    """
    check_encoder_name(name)
    spec = ENCODERS[name]
    if weights == IMAGENET:
        return _fetch_imagenet(name, spec)
    original = spec.build_original(False)
    if weights is not None:
        load_state_dict_checked(
            original, read_torch_file(weights), weights, f"the original {name} model of {spec.library}"
        )
    return original


def _adapt_first_conv(stem: nn.Sequential, in_channels: int) -> None:
    """Replace the stem's first 3-channel conv by an ``in_channels`` one, cycling its weights over the inputs."""
    old = stem[0]
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    with torch.no_grad():
        source_channel = torch.arange(in_channels) % old.in_channels
        new.weight.copy_(old.weight[:, source_channel] * (old.in_channels / in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    stem[0] = new


def check_encoder_name(name: str) -> None:
    """Raise InputError unless ``name`` is a key of ENCODERS."""
    if name not in ENCODERS:
        raise InputError(None, f"model.encoder: unknown encoder {name!r}; known: {', '.join(ENCODERS)}")


def build_encoder(name: str, weights: str | os.PathLike | None, in_channels: int = 3) -> Encoder:
    """Return the encoder ``name`` (a key of ENCODERS) with ``weights``.

    ``weights``: None = random init; "imagenet" = the library's ImageNet
    weights (downloaded into the torch hub cache); otherwise the path of a
    state dict of the library's original model, loaded strictly. Bad files and
    failed downloads raise InputError.
    """
    original = original_model(name, weights)
    stages = ENCODERS[name].stages(original)
    if in_channels != 3:
        _adapt_first_conv(stages[0], in_channels)
    return Encoder(stages, ENCODERS[name].out_channels)
