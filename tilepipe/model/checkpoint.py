"""Self-describing checkpoints: the ``model`` settings, the state dict, the input geometry and free extras.

Plain types only. The geometry is what inference must reproduce to feed the
network as it was trained (:data:`GEOMETRY_KEYS`): ``tile_size`` (level-0
pixels of a window), ``input_size`` (the side the network takes),
``read_level`` (pyramid level or ``"auto"``), ``mpp`` (micrometres per
pixel of the training slides, None when unknown) and the normalisation
``mean`` and ``std`` (per RGB channel, of ``v / 255``). Checkpoints written
before the geometry was stored have none (``geometry`` is None).
:data:`OPTIONAL_GEOMETRY_KEYS` are stored only when set: ``stain``, the
stain normalisation of the training slides
(:func:`tilepipe.data.stain.normalisation_settings`), which inference then
applies to every slide.

Every checkpoint written here also stores ``weights_sha256``, the
:func:`~tilepipe.model.state_dicts.weights_digest` of its state dict;
reading checks it, so a file damaged on disk or in a copy is refused rather
than predicting with wrong weights. Checkpoints written before the digest
was stored have none and load unchecked.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.model.build import build_model, resolve_settings
from tilepipe.model.state_dicts import load_state_dict_checked, read_torch_file, weights_digest

FORMAT = "tilepipe.model.checkpoint/1"
GEOMETRY_KEYS = ("tile_size", "input_size", "read_level", "mpp", "mean", "std")
OPTIONAL_GEOMETRY_KEYS = ("stain",)  # absent when not used, so such checkpoints stay as they were
DIGEST_KEY = "weights_sha256"  # the state dict's weights_digest, "sha256:<hex>"
_PLAIN_LEAVES = (type(None), bool, int, float, str, torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made of dicts, lists, tuples, tensors, numbers, str and None."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds plain types and tensors only")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    settings: dict[str, Any],
    extra: dict[str, Any] | None = None,
    geometry: dict[str, Any] | None = None,
) -> None:
    """Write ``model``'s state dict with its ``model`` settings (completed with defaults), its ``geometry``
    (the keys of :data:`GEOMETRY_KEYS`, and of :data:`OPTIONAL_GEOMETRY_KEYS` when set) and ``extra`` to ``path``.

    ``extra`` (e.g. epoch, metrics, optimizer state) must hold plain types and
    tensors only (TypeError otherwise, before anything is written); a
    geometry lacking a geometry key, or with another key, is a ValueError. The file
    appears atomically, with the state dict's digest (:data:`DIGEST_KEY`).
    """
    if geometry is not None and not set(GEOMETRY_KEYS) <= set(geometry) <= {*GEOMETRY_KEYS, *OPTIONAL_GEOMETRY_KEYS}:
        raise ValueError(
            f"geometry needs exactly the keys {', '.join(GEOMETRY_KEYS)} (and optionally "
            f"{', '.join(OPTIONAL_GEOMETRY_KEYS)}), got {', '.join(geometry)}"
        )
    state_dict = model.state_dict()
    payload = {
        "format": FORMAT,
        "settings": resolve_settings(settings),
        "state_dict": state_dict,
        DIGEST_KEY: weights_digest(state_dict),
        "extra": {} if extra is None else extra,
        "geometry": None
        if geometry is None
        else {key: geometry[key] for key in GEOMETRY_KEYS + OPTIONAL_GEOMETRY_KEYS if key in geometry},
    }
    _check_plain(payload["extra"], "extra")
    _check_plain(payload["geometry"], "geometry")
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return the checkpoint at ``path`` as {"settings", "state_dict", "extra", "geometry"}, tensors on ``map_location``.

    Read with ``weights_only=True``. Raises InputError naming ``path`` if it is
    not a readable tilepipe checkpoint, its settings are invalid or its
    weights do not match their stored digest (a checkpoint without one is
    not checked).
    """
    return checkpoint_from_payload(read_torch_file(path, map_location), path)


def checkpoint_from_payload(payload: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Check an object read from the file ``path`` and return it as :func:`read_checkpoint` does."""
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise InputError(path, f"not a tilepipe checkpoint (no format tag {FORMAT!r})")
    if not (isinstance(payload.get("settings"), dict) and isinstance(payload.get("state_dict"), dict)):
        raise InputError(path, "tilepipe checkpoint without a settings dict and a state dict")
    try:
        settings = resolve_settings(payload["settings"])
    except InputError as err:
        raise InputError(path, f"invalid stored settings: {err.problem}") from err
    _check_digest(payload, path)
    return {
        "settings": settings,
        "state_dict": payload["state_dict"],
        "extra": payload.get("extra", {}),
        "geometry": payload.get("geometry"),
    }


def _check_digest(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise InputError naming ``path`` unless the payload's state dict matches its stored digest (if it has one)."""
    stored = payload.get(DIGEST_KEY)
    if stored is None:
        return
    try:
        actual = weights_digest(payload["state_dict"])
    except TypeError as err:
        raise InputError(path, f"its state dict holds a non-tensor: {err}") from err
    if stored != actual:
        raise InputError(path, "weights do not match their digest: the file is corrupt; re-train or restore it")


def checkpoint_geometry(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the input geometry stored in the checkpoint at ``path`` (:data:`GEOMETRY_KEYS`), or None."""
    return read_checkpoint(path)["geometry"]


def ensemble_geometry(paths: list[str | os.PathLike]) -> dict[str, Any] | None:
    """Return the geometry every checkpoint of ``paths`` shares, or None when none of them stores one.

    Raises InputError naming two checkpoints that disagree (one with a
    geometry and one without also disagree): their members would see
    different inputs.
    """
    return _agreed_geometry([(os.fspath(p), checkpoint_geometry(p)) for p in paths])


def _agreed_geometry(geometries: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any] | None:
    """The geometry all ``(path, geometry)`` pairs share; InputError naming two that disagree."""
    first_path, first = geometries[0]
    for path, geometry in geometries[1:]:
        if geometry != first:
            differ = [
                k for k in GEOMETRY_KEYS + OPTIONAL_GEOMETRY_KEYS if (first or {}).get(k) != (geometry or {}).get(k)
            ]
            raise InputError(
                path,
                f"its input geometry differs from {first_path}'s ({', '.join(differ)}: "
                f"{[(geometry or {}).get(k) for k in differ]} vs {[(first or {}).get(k) for k in differ]}); "
                "an ensemble's members must be trained at one geometry",
            )
    return first


def checkpoint_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Return the ``model`` settings stored in the checkpoint at ``path``, without building the network."""
    return read_checkpoint(path)["settings"]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Return the network saved at ``path``, rebuilt from its stored settings, on ``map_location``, in eval mode.

    Encoder weights are not fetched again (the state dict holds them) and
    torch's global RNG is left as it was. Raises InputError naming ``path``
    when the file is not a tilepipe checkpoint or its state dict does not fit
    its settings.
    """
    return _network(read_checkpoint(path, map_location), path, map_location)


def load_ensemble(
    paths: list[str | os.PathLike], map_location: str | torch.device = "cpu"
) -> tuple[list[nn.Module], dict[str, Any] | None]:
    """Return the networks saved at ``paths`` (as :func:`load_checkpoint`) and the input geometry they share.

    Each file is read once. Raises InputError naming two checkpoints whose
    geometries differ (see :func:`ensemble_geometry`).
    """
    models, geometries = [], []
    for path in paths:
        checkpoint = read_checkpoint(path, map_location)
        geometries.append((os.fspath(path), checkpoint["geometry"]))
        geometry = _agreed_geometry(geometries)
        models.append(_network(checkpoint, path, map_location))
    return models, geometry


def _network(checkpoint: dict[str, Any], path: str | os.PathLike, map_location: str | torch.device) -> nn.Module:
    """The network of a read checkpoint, rebuilt from its settings, in eval mode on ``map_location``."""
    settings = {**checkpoint["settings"], "encoder_weights": None}
    with torch.random.fork_rng(devices=[]):
        model = build_model(settings)
    architecture, encoder = settings["architecture"], settings["encoder"]
    network = f"{encoder} U-Net" if architecture == "unet_1st_place" else f"{architecture} on {encoder}"
    load_state_dict_checked(model, checkpoint["state_dict"], path, f"the {network} of its stored settings")
    return model.to(map_location).eval()
