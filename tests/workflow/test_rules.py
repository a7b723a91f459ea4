"""The rules as Snakemake parses them: wildcard constraints, resources per attempt, settings kept out of params.

The workflow is parsed with the Snakemake API in a subprocess (the API
changes the working directory and sets up Snakemake's logging), with the
repository's config.yaml and a small overlay; the subprocess writes what
the tests read as JSON. No job runs (about 3 s, so not marked slow).
"""

import ast
import json
import subprocess
import sys

import pytest
import yaml

import tilepipe.config
from tests.workflow.runner import REPO

# Run as `python -c PARSE SNAKEFILE WORKDIR OUT CONFIGFILE...`.
PARSE = r"""
import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.iocontainers import Wildcards
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

import tilepipe.config

snakefile, workdir, out, *configfiles = sys.argv[1:]
with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=2),
        config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
        snakefile=Path(snakefile),
        workdir=Path(workdir),
    )._workflow
    rules = {}
    for rule in workflow.rules:
        wildcards = Wildcards(fromdict={name: "stage1" for name in rule.wildcard_names})
        resources = {}
        for attempt in (1, 2, 3):
            expanded = rule.expand_resources(wildcards, {}, attempt)
            resources[attempt] = {k: expanded[k] for k in ("mem_mb", "runtime", "gpu") if k in expanded.keys()}
        rules[rule.name] = {
            "constraints": dict(rule.wildcard_constraints),
            "local": rule.name in workflow._localrules or rule.norun,
            "resources": resources,
            "params": {k: v for k, v in rule.params.items() if not callable(v)},
        }
    names = workflow.globals
    facts = {
        "global_constraints": dict(workflow.wildcard_constraints),
        "rules": rules,
        "globals": sorted(k for k in names if not k.startswith("_")),
        "runtime_keys_shared": names.get("RUNTIME_KEYS") is getattr(tilepipe.config, "RUNTIME_KEYS", None),
        "training_settings": names["training_settings"]("stage1"),
    }
Path(out).write_text(json.dumps(facts, default=str))
"""

# Overlay of the parsed config: a non-default eval threshold, to see where the rules read it.
OVERLAY = {"eval": {"threshold": "tuned"}}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    """What the parsed workflow says about its rules (see PARSE)."""
    workdir = tmp_path_factory.mktemp("parse")
    overlay = workdir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    out = workdir / "facts.json"
    command = [sys.executable, "-c", PARSE, str(REPO / "Snakefile"), str(workdir), str(out)]
    result = subprocess.run(
        [*command, str(REPO / "config.yaml"), str(overlay)], capture_output=True, text=True, cwd=workdir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


# ------------------------------------------------------- wildcard constraints
def test_stage_and_fold_are_constrained_once_for_every_rule(parsed):
    assert parsed["global_constraints"]["stage"] == "stage1|stage2"
    assert parsed["global_constraints"]["fold"] == r"\d+"
    assert "slide" in parsed["global_constraints"]
    copies = {name: sorted({"stage", "fold"} & set(rule["constraints"])) for name, rule in parsed["rules"].items()}
    assert not {name: keys for name, keys in copies.items() if keys}, "per-rule copies of the global constraints"


# ------------------------------------------------------------------ resources
def cluster_rules(parsed) -> dict[str, dict]:
    """The rules whose jobs go to SLURM in a cluster run (neither `localrules` nor targets)."""
    return {name: rule for name, rule in parsed["rules"].items() if not rule["local"]}


def test_cluster_rules_declare_memory_and_time_that_grow_with_attempt(parsed):
    cluster = cluster_rules(parsed)
    assert {"ingest", "tile_index", "train_model", "predict", "pseudo_labels", "pseudo_tile_index"} <= set(cluster)
    for name, rule in cluster.items():
        first = rule["resources"]["1"]
        assert {"mem_mb", "runtime"} <= set(first), f"{name} declares no mem_mb or runtime: {first}"
    for name, rule in parsed["rules"].items():
        first, second, third = (rule["resources"][a] for a in ("1", "2", "3"))
        for key in {"mem_mb", "runtime"} & set(first):
            assert (second[key], third[key]) == (2 * first[key], 3 * first[key]), f"{name}.{key} by attempt"
    assert cluster["train_model"]["resources"]["1"]["gpu"] == cluster["predict"]["resources"]["1"]["gpu"] == 1


def test_slurm_profile_does_not_repeat_the_rules_resources(parsed):
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    copies = {
        rule: sorted({"mem_mb", "mem", "runtime", "gpu"} & set(values))
        for rule, values in (profile.get("set-resources") or {}).items()
    }
    assert not {rule: keys for rule, keys in copies.items() if keys}, "declared in rules/*.smk already"
    assert "default-resources" not in profile


# -------------------------------------------------------------------- config
def test_eval_threshold_is_read_from_the_validated_config(parsed):
    assert parsed["rules"]["eval_stage"]["params"]["mode"] == OVERLAY["eval"]["threshold"]
    assert not {"EVAL_DEFAULTS", "eval_setting"} & set(parsed["globals"]), "the schema holds the default"


def runtime_keys() -> dict[str, tuple[str, ...]]:
    """tilepipe.config.RUNTIME_KEYS (looked up when a test runs, so that the other tests run without it)."""
    return tilepipe.config.RUNTIME_KEYS


def test_runtime_keys_have_one_definition(parsed):
    keys = runtime_keys()
    assert keys["train"] == ("num_workers", "log_every")
    assert "batch_size" in keys["inference"]
    assert parsed["runtime_keys_shared"], "rules/common.smk uses tilepipe.config.RUNTIME_KEYS"
    for script in ("train.py", "predict.py"):
        tree = ast.parse((REPO / "workflow_scripts" / script).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "tilepipe.config"
            for alias in node.names
        }
        assert "RUNTIME_KEYS" in imported, script
        runtime = {key for section in keys.values() for key in section}
        literals = [
            ast.unparse(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Tuple | ast.List | ast.Set)
            and node.elts
            and all(isinstance(e, ast.Constant) and e.value in runtime for e in node.elts)
        ]
        assert not literals, f"{script} repeats runtime keys: {literals}"


def test_runtime_keys_are_not_params(parsed):
    keys = runtime_keys()
    assert not set(keys["train"]) & set(parsed["training_settings"]["train"])
    predict = parsed["rules"]["predict"]["params"]["inference"]
    assert not {"threshold", *keys["inference"]} & set(predict)
    assert {"tta", "tile_size", "input_size"} <= set(predict)
    # Every inference setting is a param of predict, runtime-only, or the submission's threshold.
    schema = tilepipe.config.defaults("inference")
    assert set(schema) == (set(schema) & set(predict)) | set(keys["inference"]) | {"threshold"}


def test_the_slurm_ci_reads_the_same_memory_requests(parsed):
    """tests/slurm/slurm_ci.py caps requests to the CI node from the rule files: it must see what Snakemake sees."""
    sys.path.insert(0, str(REPO / "tests" / "slurm"))
    try:
        import slurm_ci
    finally:
        sys.path.pop(0)
    declared = {
        name: rule["resources"]["1"]["mem_mb"]
        for name, rule in parsed["rules"].items()
        if "mem_mb" in rule["resources"]["1"]
    }
    assert declared and slurm_ci.rule_memory(REPO / "rules") == declared
