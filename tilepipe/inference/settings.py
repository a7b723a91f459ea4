"""Which config values a prediction depends on, as the keyword arguments of ``predict_slide``.

Torch-free: the rules import it at parse time to build the ``predict``
params, and tests build their settings from the schema's defaults with it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["prediction_settings", "with_geometry"]


def prediction_settings(
    config: dict[str, Any], *, gate: bool = True, train: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return, from a resolved config, the settings that change a prediction, sorted by key.

    Geometry (``tile_size``, ``input_size``, ``read_level``), TTA, the
    classification gate (``clf_threshold``; None with ``gate=False``, as
    out-of-fold predictions are made so that evaluation can sweep the gate
    from their window tables), the tissue skip and its saturation threshold, and
    the precision (``amp``: fp16 autocast on CUDA). Not
    ``inference.threshold`` (only the submission cuts at it) and none of the
    settings that change only speed (``inference.batch_size``).
    ``train``: the ``train`` section whose ``input_size`` and ``read_level``
    apply (an experiment's, :func:`tilepipe.experiments.experiment_sections`);
    None: the config's.
    """
    inference = config["inference"]
    train = config["train"] if train is None else train
    return dict(
        sorted(
            {
                "tile_size": config["tiles"]["size"],
                "input_size": train["input_size"],
                "read_level": train["read_level"],
                "saturation_threshold": config["tiles"]["saturation_threshold"],
                "tta": list(inference["tta"]),
                "clf_threshold": inference["clf_threshold"] if gate else None,
                "min_tissue": inference["min_tissue"],
                "amp": inference["amp"],
            }.items()
        )
    )


RESAMPLE_TOLERANCE = 0.05


def with_geometry(
    settings: dict[str, Any], geometry: dict[str, Any] | None, slide_mpp: float | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Return ``settings`` (``prediction_settings``) with the models' own input geometry, and what it changed.

    ``geometry`` is the ensemble's checkpoint geometry
    (:func:`tilepipe.model.checkpoint.ensemble_geometry`) or None (older
    checkpoints: the config's settings stand). The window side, the
    network's input side, the read level and the normalisation come from
    the checkpoints, so models predict what they were trained on. When the
    slide's pixel size ``slide_mpp`` (micrometres) differs from the
    models' by more than :data:`RESAMPLE_TOLERANCE`, the window side in the
    slide's pixels is scaled so that a window covers the same tissue as in
    training (the network still takes ``input_size``: the resize to it
    resamples to the training resolution), and the output stays at the
    slide's own resolution. The list names each setting that differs from
    the config's, as ``key: config -> checkpoint``. A geometry with a
    ``stain`` normalisation (:mod:`tilepipe.data.stain`) adds it as the
    setting ``stain``.
    """
    if geometry is None:
        return dict(settings), []
    updated = {**settings, "mean": list(geometry["mean"]), "std": list(geometry["std"])}
    changes = []
    for key in ("tile_size", "input_size", "read_level"):
        if settings[key] != geometry[key]:
            changes.append(f"{key}: {settings[key]!r} -> {geometry[key]!r}")
        updated[key] = geometry[key]
    if geometry.get("stain") is not None:
        stain = geometry["stain"]
        updated["stain"] = stain
        changes.append(f"stain: None -> {stain['method']} to lab mean {stain['lab_mean']} std {stain['lab_std']}")
    model_mpp = geometry.get("mpp")
    if model_mpp and slide_mpp and abs(model_mpp / slide_mpp - 1) > RESAMPLE_TOLERANCE:
        tile = max(4, 4 * round(geometry["tile_size"] * model_mpp / slide_mpp / 4))
        changes.append(
            f"tile_size: {geometry['tile_size']} -> {tile} slide pixels (the slide's {slide_mpp:.4g} um pixels, "
            f"the models' {model_mpp:.4g} um: windows resampled to the training resolution)"
        )
        updated["tile_size"] = tile
        if "stain" in updated:  # the slide's colour statistics at the models' scale too
            downsample = 2 ** max(
                0, round(math.log2(updated["stain"]["stats_downsample"] * tile / geometry["tile_size"]))
            )
            updated["stain"] = {**updated["stain"], "stats_downsample": downsample}
    return updated, changes
