"""timm backbones (``model.encoder: timm/NAME``): weights, errors, and five feature maps for the 1st-place decoder.

timm builds the backbone with ``features_only=True``; tilepipe only chooses
which of its feature maps to take and says what went wrong in terms of the
config. Encoder weights: None (random), ``"imagenet"`` (timm's pretrained
weights of NAME's default tag, or of ``NAME.TAG``), or the path of a state
dict of timm's ``timm.create_model(NAME)`` (``.pth`` or ``.safetensors``;
its classifier may be left out), checked key by key here and loaded by timm
(which adapts the first conv to ``in_channels``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tilepipe.config import TIMM_PREFIX
from tilepipe.errors import InputError
from tilepipe.model.encoders import IMAGENET, imagenet_download
from tilepipe.model.state_dicts import read_torch_file, state_dict_mismatch

REDUCTIONS = (2, 4, 8, 16, 32)  # the strides of the five maps the 1st-place decoder takes, finest first


def timm_name(encoder: str) -> str | None:
    """Return NAME of a ``timm/NAME`` encoder setting, or None for any other encoder."""
    return encoder[len(TIMM_PREFIX) :] if encoder.startswith(TIMM_PREFIX) else None


def check_timm_name(name: str) -> None:
    """Raise InputError (model.encoder) unless timm has a model ``name`` (``NAME`` or ``NAME.TAG``)."""
    import timm

    base, tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(base):
        similar = timm.list_models(f"*{base.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join('timm/' + s for s in similar)}" if similar else ""
        raise InputError(None, f"model.encoder: timm has no model {base!r} (timm/{name}){hint}")
    if tag:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError as err:
            tags = timm.list_pretrained(f"{base}.*")[:8]
            raise InputError(
                None, f"model.encoder: timm has no pretrained tag {tag!r} for {base}; tags: {', '.join(tags)}"
            ) from err


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in the file ``path`` (safetensors by its suffix, else a torch file); InputError naming it."""
    if os.fspath(path).endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(os.fspath(path), device="cpu")
        except (OSError, SafetensorError) as err:
            raise InputError(path, f"cannot read as a safetensors file ({type(err).__name__}: {err})") from err
    else:
        loaded = read_torch_file(path)
    if not (isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())):
        raise InputError(path, f"expected a state dict (a dict of tensors), found {type(loaded).__name__}")
    return dict(loaded)


def pretrained_arguments(name: str, weights: str | os.PathLike | None) -> dict[str, Any]:
    """Return the ``timm.create_model`` arguments that give timm model ``name`` the encoder ``weights``.

    ``{"pretrained": False}`` for None; ``{"pretrained": True}`` for
    ``"imagenet"``; for a file, its state dict as timm's pretrained source
    (read here: InputError naming the file when it is not a state dict).
    Raises InputError when timm has no pretrained weights for ``name``.
    """
    import timm

    if weights is None:
        return {"pretrained": False}
    if weights == IMAGENET:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise InputError(None, f"model.encoder_weights: timm has no pretrained weights for {name}")
        return {"pretrained": True}
    state_dict = _read_state_dict(weights)
    # Checked here, key by key: timm drops the classifier, then loads feature models non-strictly.
    with torch.device("meta"):  # shapes only
        headless = timm.create_model(name, pretrained=False, num_classes=0)
    classifier = headless.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    problem = state_dict_mismatch(headless, {k: v for k, v in state_dict.items() if not k.startswith(heads)})
    if problem is not None:
        raise InputError(weights, f"does not fit timm's {name} model: {problem}")
    overlay = {"state_dict": state_dict, "source": None, "file": None}
    return {"pretrained": True, "pretrained_cfg_overlay": overlay}


def _weights_source(name: str) -> tuple[str, str]:
    """(where timm downloads ``name``'s pretrained weights from, where it caches them)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg.hf_hub_id:
        return f"the Hugging Face Hub repository {cfg.hf_hub_id}", "the Hugging Face cache ($HF_HOME/hub)"
    return str(cfg.url), "$TORCH_HOME/hub/checkpoints/"


@contextmanager
def timm_errors(name: str, weights: str | os.PathLike | None) -> Iterator[None]:
    """Turn what goes wrong while timm (or smp through timm) builds model ``name`` with ``weights`` into InputError.

    A failed download says what to do offline (as for the named encoders); a
    weights file that does not fit names the file and its first bad keys; a
    backbone without maps at strides 4..32 names model.encoder.
    """
    try:
        if weights == IMAGENET:
            source, cache = _weights_source(name)
            with imagenet_download(f"timm/{name}", source, f"a state dict of timm's {name}", cache):
                yield
        else:
            yield
    except RuntimeError as err:  # timm's strict load, after the key check: e.g. a first conv it cannot adapt
        if weights is None or weights == IMAGENET or "state_dict" not in str(err):
            raise
        raise InputError(weights, f"does not fit timm's {name} model: {str(err).splitlines()[0]}") from err
    except ValueError as err:  # smp's TimmUniversalEncoder: "Unsupported model downsampling pattern."
        if isinstance(err, InputError) or "downsampling" not in str(err):
            raise
        raise InputError(
            None, f"model.encoder: timm/{name} has no feature maps at strides 2 or 4, 8, 16 and 32 ({err})"
        ) from err


def _feature_indices(name: str) -> tuple[list[int | None], list[int]]:
    """For timm model ``name``: the index of its feature map for each of REDUCTIONS (None: it has no stride-2 map)
    and their channel counts (0 for a missing map).

    Where several maps share a stride the deepest is taken. Raises InputError
    (model.encoder) when a map at stride 4, 8, 16 or 32 is missing.
    """
    import timm

    with torch.device("meta"):
        probe = timm.create_model(name, features_only=True)
    by_reduction: dict[int, tuple[int, int]] = {}
    for index, info in enumerate(probe.feature_info.info):
        if info.get("module"):  # an unnamed entry cannot be extracted (tresnet's stem)
            by_reduction[info["reduction"]] = (index, info["num_chs"])
    missing = [r for r in REDUCTIONS[1:] if r not in by_reduction]
    if missing:
        found = sorted(by_reduction)
        raise InputError(
            None,
            f"model.encoder: timm/{name} has no feature maps at strides {', '.join(map(str, missing))} "
            f"(it has {', '.join(map(str, found))}); the decoders need maps at strides 4, 8, 16 and 32",
        )
    indices = [by_reduction[r][0] if r in by_reduction else None for r in REDUCTIONS]
    channels = [by_reduction[r][1] if r in by_reduction else 0 for r in REDUCTIONS]
    return indices, channels


class TimmEncoder(nn.Module):
    """A timm backbone as five feature maps, finest first, at strides 2, 4, 8, 16, 32 (tilepipe's Encoder contract).

    ``self.model`` is timm's ``features_only`` model (so its state dict keys
    are timm's, under ``encoder.model.``). A backbone whose first map is at
    stride 4 (ConvNeXt, Swin, ...) gives a stride-2 map with 0 channels
    (``out_channels[0] == 0``); the 1st-place decoder does not use that map.
    Maps a backbone gives channels-last (NHWC) are returned as (b, c, h, w).
    """

    def __init__(self, name: str, weights: str | os.PathLike | None, in_channels: int = 3):
        super().__init__()
        import timm

        check_timm_name(name)
        indices, channels = _feature_indices(name)
        self.has_stride2 = indices[0] is not None
        arguments = pretrained_arguments(name, weights)
        with timm_errors(name, weights):
            self.model = timm.create_model(
                name,
                features_only=True,
                out_indices=tuple(i for i in indices if i is not None),
                in_chans=in_channels,
                **arguments,
            )
        self.channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self.out_channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.model(x))
        if self.channels_last_output:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        if not self.has_stride2:
            b, _, h, w = x.shape
            features.insert(0, x.new_empty((b, 0, h // 2, w // 2)))
        return features
