"""The configuration schema (``tilepipe/config.schema.yaml``): the one source of defaults, and validation.

The Snakefile validates the run's config against the same file, so the
workflow, the library and the tests share one set of defaults.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tilepipe.errors import InputError
from tilepipe.experiments import check_experiments

__all__ = [
    "FIRST_PLACE_ARCHITECTURE",
    "RUNTIME_KEYS",
    "SCHEMA_PATH",
    "SMP_ARCHITECTURES",
    "SmpArchitecture",
    "check_model_settings",
    "check_settings",
    "defaults",
    "resolve",
]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Settings that change how fast a job runs, never what it produces, by config
# section. The workflow keeps them out of the rules' params (changing one
# reruns nothing); the scripts read them from the run's config.
RUNTIME_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("num_workers", "log_every"),
    "inference": ("batch_size",),
}


# The model section's architectures (model.architecture). Named here, without
# importing torch, so that the Snakefile checks a config at parse time.
FIRST_PLACE_ARCHITECTURE = "unet_1st_place"
TIMM_PREFIX = "timm/"
NAMED_ENCODERS = ("se_resnext101_32x4d", "se_resnext50_32x4d", "resnet34", "resnet18")  # tilepipe.model.ENCODERS
# The 1st-place decoder's own parts: null = on for unet_1st_place, off (and true refused) elsewhere.
FIRST_PLACE_PARTS = ("cbam", "hypercolumns", "deep_supervision")
_TIMM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class SmpArchitecture:
    """What tilepipe needs to know of one segmentation_models_pytorch architecture before building it."""

    attention: tuple[str, ...] = ()  # decoder_attention_type values its constructor takes
    min_input_size: int = 32  # smallest train.input_size (a multiple of 32) its forward accepts


# segmentation_models_pytorch 0.6 architectures, by their class name (smp.create_model's arch, any case).
# Not offered: DPT (a ViT encoder whose forward returns prefix tokens beside the maps, so
# ``encode``'s features would not be a list of maps). tests/model/test_smp.py checks this
# table against smp's own.
SMP_ARCHITECTURES: dict[str, SmpArchitecture] = {
    "Unet": SmpArchitecture(attention=("scse",)),
    "UnetPlusPlus": SmpArchitecture(attention=("scse",)),
    "MAnet": SmpArchitecture(),
    "Linknet": SmpArchitecture(),
    "FPN": SmpArchitecture(),
    "PSPNet": SmpArchitecture(),
    "DeepLabV3": SmpArchitecture(),
    "DeepLabV3Plus": SmpArchitecture(),
    "PAN": SmpArchitecture(min_input_size=128),  # its pyramid attention pools the stride-16 map three times
    "UPerNet": SmpArchitecture(),
    "Segformer": SmpArchitecture(),
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
    check_experiments(config, _check_experiment)


def _check_experiment(sections: dict[str, dict[str, Any]], where: str) -> None:
    """Check one experiment's merged ``model``/``loss``/``train`` sections: the schema, then the model.

    ``where`` prefixes every key the InputError names (``experiments.NAME.``
    for a named experiment, empty for the top-level sections).
    """
    for name, values in sections.items():
        if where:  # the top-level sections were validated with the whole config
            validator = jsonschema.Draft202012Validator(_schema()["properties"][name])
            error = jsonschema.exceptions.best_match(validator.iter_errors(values))
            if error is not None:
                path = ".".join([name, *map(str, error.absolute_path)])
                raise InputError(None, f"{where}{path}: {error.message}")
    try:
        check_model_settings(sections["model"], sections["train"]["input_size"])
    except InputError as error:
        raise InputError(None, f"{where}{error.problem}") from None


def _model_error(key: str, problem: str) -> InputError:
    return InputError(None, f"model.{key}: {problem}")


def check_model_settings(model: dict[str, Any], input_size: int | None = None) -> None:
    """Check the ``model`` section's architecture, encoder name and heads against each other (and ``input_size``).

    ``model`` has every key of the schema's ``model`` section (values may be
    null where the schema allows it). Raises :class:`InputError` naming the
    key: an unknown architecture or encoder name, ``decoder_attention`` where
    the architecture has none, a 1st-place decoder part (``cbam``,
    ``hypercolumns``, ``deep_supervision``) set true for an smp architecture,
    or an ``input_size`` (train.input_size) smaller than the architecture
    accepts. Whether a ``timm/NAME`` exists in timm is checked when the
    network is built (timm imports torch).
    """
    architecture = model["architecture"]
    first_place = architecture == FIRST_PLACE_ARCHITECTURE
    if not first_place and architecture not in SMP_ARCHITECTURES:
        known = [FIRST_PLACE_ARCHITECTURE, *SMP_ARCHITECTURES]
        same = [name for name in known if str(architecture).lower() == name.lower()]
        hint = f"did you mean {same[0]!r}? " if same else ""
        raise _model_error("architecture", f"unknown architecture {architecture!r}; {hint}known: {', '.join(known)}")
    encoder = model["encoder"]
    if not isinstance(encoder, str) or not (
        encoder in NAMED_ENCODERS
        or (encoder.startswith(TIMM_PREFIX) and _TIMM_NAME.fullmatch(encoder[len(TIMM_PREFIX) :]))
    ):
        raise _model_error(
            "encoder", f"unknown encoder {encoder!r}; known: {', '.join(NAMED_ENCODERS)}, or timm/NAME for a timm model"
        )
    attention = model["decoder_attention"]
    if attention is not None:
        offered = () if first_place else SMP_ARCHITECTURES[architecture].attention
        if attention not in offered:
            where = [name for name, arch in SMP_ARCHITECTURES.items() if attention in arch.attention]
            instead = " (its decoder's attention is model.cbam)" if first_place else ""
            raise _model_error(
                "decoder_attention",
                f"{attention!r} is not offered by {architecture}{instead}; "
                + (f"architectures with it: {', '.join(where)}" if where else "offered: scse (Unet, UnetPlusPlus)"),
            )
    if not first_place:
        for key in FIRST_PLACE_PARTS:
            if model[key]:
                raise _model_error(
                    key,
                    f"part of the unet_1st_place decoder; {architecture} has no {key.replace('_', ' ')}: "
                    "set it to null or false",
                )
        smallest = SMP_ARCHITECTURES[architecture].min_input_size
        if input_size is not None and input_size < smallest:
            raise InputError(
                None, f"train.input_size: {architecture} needs inputs of at least {smallest} px, got {input_size}"
            )


def defaults(section: str | None = None) -> dict[str, Any]:
    """Return the schema's default config, or its ``section`` (e.g. ``"model"``), as a new dict."""
    config = resolve({})
    return config if section is None else config[section]
