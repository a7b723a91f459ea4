"""The rules as Snakemake parses them: wildcard constraints, resources per attempt, settings kept out of params.

The workflow is parsed with the Snakemake API in a subprocess (the API
changes the working directory and sets up Snakemake's logging), with the
repository's config.yaml and a small overlay; the subprocess writes what
the tests read as JSON. No job runs (about 3 s, so not marked slow).
"""

import ast
import sys

import pytest
import yaml

import tilepipe.config
from tests.workflow.runner import REPO, parse_workflow

# Overlay of the parsed config: a non-default eval threshold, to see where the rules read it.
OVERLAY = {"eval": {"threshold": "tuned"}}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    """What the parsed workflow says about its rules (tests/workflow/parse_rules.py)."""
    workdir = tmp_path_factory.mktemp("parse")
    overlay = workdir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    return parse_workflow(workdir, REPO / "config.yaml", overlay)


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
    predict = parsed["predict_inference"]["test"]
    assert parsed["rules"]["apply_predict"]["params"]["inference"] == predict
    assert not {"threshold", *keys["inference"]} & set(predict)
    assert {"tta", "tile_size", "input_size"} <= set(predict)
    # Every inference setting is a param of predict, runtime-only, or the submission's threshold.
    schema = tilepipe.config.defaults("inference")
    assert set(schema) == (set(schema) & set(predict)) | set(keys["inference"]) | {"threshold"}


def test_apply_ingest_takes_only_the_ingest_keys_that_can_change_a_users_slide(parsed, tmp_path):
    """A label-only key (polygon_coordinates) reruns the dataset's ingest, not apply's; the pyramid's does both."""
    default = tilepipe.config.defaults("ingest")
    changed = {
        "polygon_coordinates": "centres" if default["polygon_coordinates"] != "centres" else "edges",
        "min_level_size": 2 * default["min_level_size"],
    }
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({**OVERLAY, "ingest": changed}))
    other = parse_workflow(tmp_path, REPO / "config.yaml", overlay)
    before, after = (p["rules"]["apply_ingest"]["params"]["ingest"] for p in (parsed, other))
    assert "polygon_coordinates" not in before and {"chunk", "min_level_size"} <= set(before)
    assert after == {**before, "min_level_size": changed["min_level_size"]}
    assert other["rules"]["ingest"]["params"]["ingest"]["polygon_coordinates"] == changed["polygon_coordinates"]


def test_out_of_fold_predictions_are_ungated_and_the_others_gated(parsed):
    """Eval sweeps the classification gate from out-of-fold window tables, so those run every window."""
    oof, test = parsed["predict_inference"]["oof"], parsed["predict_inference"]["test"]
    assert test["clf_threshold"] == tilepipe.config.defaults("inference")["clf_threshold"] is not None
    assert oof["clf_threshold"] is None
    assert {k: v for k, v in oof.items() if k != "clf_threshold"} == {
        k: v for k, v in test.items() if k != "clf_threshold"
    }


def test_the_slurm_ci_caps_exactly_the_requests_above_its_node(parsed, capsys):
    """tests/slurm/slurm_ci.py fits the rules' requests into the CI node: it must cap what Snakemake would ask."""
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
    node = sorted(declared.values())[len(declared) // 2]
    slurm_ci.resource_args(str(node), REPO / "config.yaml")
    printed = capsys.readouterr().out.split()
    assert printed[0] == "--set-resources"
    assert sorted(printed[1:]) == sorted(f"{rule}:mem_mb={node}" for rule, mem in declared.items() if mem > node)


def test_training_memory_follows_the_configured_encoder_batch_and_device(parsed, tmp_path):
    """train_model asks for what tilepipe.resources measures for the run's settings (the default: the demo's)."""
    from tilepipe.resources import training_memory_mb

    config = tilepipe.config.defaults()
    assert parsed["rules"]["train_model"]["resources"]["1"]["mem_mb"] == training_memory_mb(
        config["model"], config["train"]
    )
    recipe_like = {
        "model": {"encoder": "se_resnext101_32x4d"},
        "train": {"batch_size": 12, "input_size": 320, "device": "cpu"},
    }
    overlay = tmp_path / "recipe_like.yaml"
    overlay.write_text(yaml.safe_dump(recipe_like))
    requests = parse_workflow(tmp_path, REPO / "config.yaml", overlay)["rules"]["train_model"]["resources"]
    resolved = tilepipe.config.resolve(recipe_like)
    assert requests["1"]["mem_mb"] == training_memory_mb(resolved["model"], resolved["train"]) > 20_000
    assert requests["2"]["mem_mb"] == 2 * requests["1"]["mem_mb"], "a retry asks for more"
