"""The config schema: its defaults are config.yaml, and it rejects what it should."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parent.parent
SCHEMA = str(REPO / "tilepipe/config.schema.yaml")


def defaults() -> dict:
    config: dict = {}
    validate(config, SCHEMA)
    return config


def test_schema_defaults_are_config_yaml():
    assert defaults() == yaml.safe_load((REPO / "config.yaml").read_text())


def test_every_overlay_in_configs_is_valid():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in sorted((REPO / "configs").glob("*.yaml")):
        merged = copy.deepcopy(base)
        for key, value in yaml.safe_load(path.read_text()).items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
        validate(merged, SCHEMA)


@pytest.mark.parametrize(
    "config",
    [
        {"tiles": {"size": "big"}},
        {"tiles": {"sise": 256}},
        {"bogus": 1},
        {"train": {"input_size": 100}},
        {"inference": {"tta": ["rot90"]}},
        {"seed": -1},
    ],
)
def test_bad_values_are_rejected(config):
    with pytest.raises(WorkflowError):
        validate(config, SCHEMA)
