"""Named experiments: several models of one run side by side, and the ensemble that averages them.

A config's ``experiments`` maps a name to an overlay of the ``model``,
``loss`` and ``train`` sections, merged recursively over the top-level
sections (a list replaces a list). No experiments (the default, ``{}``)
is one experiment, :data:`DEFAULT_EXPERIMENT`, made of the top-level
sections. The experiment named :data:`DEFAULT_EXPERIMENT` keeps the
single-model paths (``results/models/...``, ``results/predictions/...``,
``results/eval/...``); any other lives under ``results/experiments/{name}/``
with the same layout (:func:`experiment_root`).

``ensemble.experiments`` (null = all, in config order) and
``ensemble.weights`` (null = equal) choose the members whose fold models
predict the test and external slides (the submission, pseudo-labels,
objects and ``apply``).

Torch-free: the Snakefile resolves experiments at parse time.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from tilepipe.errors import InputError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "RUN_WIDE_TRAIN_KEYS",
    "EXPERIMENT_SECTIONS",
    "ROOT",
    "check_experiments",
    "ensemble_weights",
    "experiment_names",
    "experiment_of_root",
    "experiment_root",
    "experiment_sections",
    "merge",
]

DEFAULT_EXPERIMENT = "main"
EXPERIMENT_SECTIONS = ("model", "loss", "train")
ROOT = "results"  # the default experiment's root; others: results/experiments/{name}
# Train keys an overlay may not set: the jobs' threads and DataLoader workers,
# logging and the device are read from the top-level train section (the
# runtime-only keys of tilepipe.config.RUNTIME_KEYS, and the device).
RUN_WIDE_TRAIN_KEYS = ("num_workers", "log_every", "device")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overlay`` merged in recursively (dicts merge, anything else replaces); new dicts."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def experiment_names(config: dict[str, Any]) -> list[str]:
    """Return the run's experiment names in config order (``[DEFAULT_EXPERIMENT]`` without ``experiments``)."""
    return list(config.get("experiments") or {}) or [DEFAULT_EXPERIMENT]


def experiment_sections(config: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Return experiment ``name``'s ``model``, ``loss`` and ``train`` sections: its overlay over the top-level ones.

    Keys are sorted (a stable params repr); KeyError names an unknown experiment.
    """
    experiments = config.get("experiments") or {}
    if name not in experiment_names(config):
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(experiment_names(config))}")
    overlay = experiments.get(name) or {}
    return {
        section: dict(sorted(merge(config[section], overlay.get(section) or {}).items()))
        for section in EXPERIMENT_SECTIONS
    }


def experiment_root(name: str) -> str:
    """Return the folder holding experiment ``name``'s models, predictions, eval and benchmarks (no trailing slash)."""
    return ROOT if name == DEFAULT_EXPERIMENT else f"{ROOT}/experiments/{name}"


def experiment_of_root(root: str) -> str:
    """Return the experiment whose folder is ``root`` (the inverse of :func:`experiment_root`); ValueError otherwise."""
    if root == ROOT:
        return DEFAULT_EXPERIMENT
    prefix = f"{ROOT}/experiments/"
    if root.startswith(prefix) and "/" not in root[len(prefix) :] and root != prefix:
        return root[len(prefix) :]
    raise ValueError(f"{root!r} is no experiment folder ({ROOT} or {prefix}NAME)")


def ensemble_weights(config: dict[str, Any]) -> dict[str, float]:
    """Return the ensemble's members -> their weight, in member order, the weights summing to 1.

    ``ensemble.experiments`` null = every experiment; ``ensemble.weights``
    null = equal weights. The config is checked (:func:`check_experiments`).
    """
    ensemble = config.get("ensemble") or {}
    members = ensemble.get("experiments") or experiment_names(config)
    weights = ensemble.get("weights") or [1.0] * len(members)
    total = float(sum(weights))
    return {name: float(w) / total for name, w in zip(members, weights, strict=True)}


def check_experiments(config: dict[str, Any], check_sections) -> None:
    """Check the ``experiments`` and ``ensemble`` sections of a validated config; InputError naming the key.

    ``check_sections(sections, where)`` checks one experiment's merged
    sections (:func:`experiment_sections`) and raises InputError whose
    message it prefixes with ``where`` (e.g. ``experiments.unetpp.``).
    Refused: named experiments without :data:`DEFAULT_EXPERIMENT` (whose
    results keep the single-model paths; its overlay may be empty), an
    ensemble member that is no experiment or is listed twice, weights that
    do not match the members one to one, are not finite and >= 0 or do not
    sum above 0, members whose ``train.input_size`` or ``train.read_level``
    differ (an ensemble's members see one input), a member without a
    classification head while ``inference.clf_threshold`` gates on it,
    names that differ only in case (one folder on macOS and Windows), and
    overlays of the run-wide keys :data:`RUN_WIDE_TRAIN_KEYS`.
    """
    names = experiment_names(config)
    if config.get("experiments") and DEFAULT_EXPERIMENT not in names:
        raise InputError(
            None,
            f"experiments: needs an experiment named {DEFAULT_EXPERIMENT!r} (its results keep the paths "
            f"results/models, results/predictions, results/eval; its overlay may be empty: "
            f"{DEFAULT_EXPERIMENT}: {{}}); got {', '.join(names)}",
        )
    folded = [name.casefold() for name in names]
    clash = sorted({name for name, key in zip(names, folded, strict=True) if folded.count(key) > 1})
    if clash:
        raise InputError(None, f"experiments: names that differ only in case share one folder: {', '.join(clash)}")
    for name in names:
        where = "" if not config.get("experiments") else f"experiments.{name}."
        run_wide = sorted(
            set((config.get("experiments") or {}).get(name, {}).get("train") or {}) & set(RUN_WIDE_TRAIN_KEYS)
        )
        if run_wide:
            raise InputError(
                None,
                f"{where}train.{run_wide[0]}: set for the whole run (top-level train section): the jobs' threads, "
                "memory and device are one for every experiment",
            )
        check_sections(experiment_sections(config, name), where)
    ensemble = config.get("ensemble") or {}
    members = ensemble.get("experiments")
    if members is not None:
        unknown = [m for m in members if m not in names]
        if unknown or not members or len(set(members)) != len(members):
            raise InputError(
                None,
                f"ensemble.experiments: expected distinct names among the experiments ({', '.join(names)}), "
                f"got {members}",
            )
    members = members or names
    weights = ensemble.get("weights")
    if weights is not None and (
        len(weights) != len(members) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0
    ):
        raise InputError(
            None,
            f"ensemble.weights: expected one weight >= 0 per member ({', '.join(members)}), not all 0, got {weights}",
        )
    if config["inference"].get("clf_threshold") is not None:
        headless = [m for m in members if not experiment_sections(config, m)["model"].get("clf_head", True)]
        if headless:
            raise InputError(
                None,
                f"inference.clf_threshold: {headless[0]}'s model has no classification head (model.clf_head: false) "
                "to gate the ensemble's windows; set inference.clf_threshold: null or leave it out of the ensemble",
            )
    first = experiment_sections(config, members[0])["train"]
    for name in members[1:]:
        train = experiment_sections(config, name)["train"]
        for key in ("input_size", "read_level"):
            if train[key] != first[key]:
                raise InputError(
                    None,
                    f"ensemble.experiments: {name}'s train.{key} {train[key]!r} differs from {members[0]}'s "
                    f"{first[key]!r}; an ensemble's members must take one input (or leave {name} out of it)",
                )
