"""The configuration schema (``tilepipe/config.schema.yaml``): the one source of defaults, and validation.

The Snakefile validates the run's config against the same file, so the
workflow, the library and the tests share one set of defaults.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tilepipe.errors import InputError

__all__ = ["RUNTIME_KEYS", "SCHEMA_PATH", "check_settings", "defaults", "resolve"]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Settings that change how fast a job runs, never what it produces, by config
# section. The workflow keeps them out of the rules' params (changing one
# reruns nothing); the scripts read them from the run's config.
RUNTIME_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("num_workers", "log_every"),
    "inference": ("batch_size",),
}


@lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def _fill_defaults(validator_class):
    """A validator class that also sets each missing property to its schema default (as Snakemake's validate)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_Validator = _fill_defaults(jsonschema.Draft202012Validator)


def resolve(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return ``config`` (not modified) completed with the schema's defaults and validated.

    Raises :class:`InputError` naming the offending key path for an unknown
    key, a wrong type or value, or keys that contradict each other
    (:func:`check_settings`).
    """
    resolved = copy.deepcopy(config or {})
    error = jsonschema.exceptions.best_match(_Validator(_schema()).iter_errors(resolved))
    if error is not None:
        path = [str(p) for p in error.absolute_path]
        if error.validator == "additionalProperties":
            known = ", ".join(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
                raise InputError(None, f"{'.'.join([*path, key])}: unknown key (known: {known})")
        raise InputError(None, f"{'.'.join(path) or 'config'}: {error.message}")
    check_settings(resolved)
    return resolved


def check_settings(config: dict[str, Any]) -> None:
    """Check what the schema cannot: values that contradict each other or the data they will meet.

    ``config`` is complete (validated, defaults filled). Raises
    :class:`InputError` naming the key, so that the workflow refuses at parse
    time instead of failing in a job after ingest.
    """
    chunk = config["ingest"]["chunk"]
    if chunk % 2:
        raise InputError(
            None, f"ingest.chunk: must be an even number of pixels (each pyramid level halves it), got {chunk}"
        )
    tiles = config["tiles"]
    if tiles["shift"] >= tiles["size"]:
        raise InputError(
            None,
            f"tiles.shift: the shifted grid's offset must be smaller than tiles.size = {tiles['size']} "
            f"(half of it in the recipe; 0 for no shifted grid), got {tiles['shift']}",
        )


def defaults(section: str | None = None) -> dict[str, Any]:
    """Return the schema's default config, or its ``section`` (e.g. ``"model"``), as a new dict."""
    config = resolve({})
    return config if section is None else config[section]
