"""Parse the workflow with the Snakemake API and write what it says about its rules as JSON.

    python tests/workflow/parse_rules.py SNAKEFILE WORKDIR OUT CONFIGFILE...

Run in a subprocess (the API changes the working directory and sets up
Snakemake's logging); ``tests.workflow.runner.parse_workflow`` calls it.
Per rule: wildcard constraints, whether it is local, mem_mb/runtime/gpu for
attempts 1-3 and its plain params; and the workflow's global constraints,
globals, the training settings of stage 1 and predict's inference params
for an out-of-fold and a test slide.
"""

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
        values = {name: "results" if name == "root" else "stage1" for name in rule.wildcard_names}
        wildcards = Wildcards(fromdict=values)
        resources = {}
        for attempt in (1, 2, 3):
            expanded = rule.expand_resources(wildcards, {}, attempt)
            resources[attempt] = {k: expanded[k] for k in ("mem_mb", "runtime", "gpu") if k in expanded.keys()}  # noqa: SIM118 - a Namedlist: `in` would test values
        rules[rule.name] = {
            "constraints": dict(rule.wildcard_constraints),
            "local": rule.name in workflow._localrules or rule.norun,
            "resources": resources,
            "params": {k: v for k, v in rule.params.items() if not callable(v)},
        }
    names = workflow.globals
    predict_inference = dict(workflow.get_rule("predict").params.items())["inference"]
    facts = {
        "global_constraints": dict(workflow.wildcard_constraints),
        "rules": rules,
        "globals": sorted(k for k in names if not k.startswith("_")),
        "runtime_keys_shared": names.get("RUNTIME_KEYS") is getattr(tilepipe.config, "RUNTIME_KEYS", None),
        "training_settings": names["training_settings"]("stage1"),
        # predict's inference params for the first out-of-fold and the first test slide
        "predict_inference": {
            kind: predict_inference(Wildcards(fromdict={"root": "results", "stage": "stage1", "slide": names[ids][0]}))
            for kind, ids in (("oof", "OOF_IDS"), ("test", "TEST_IDS"))
        },
    }
Path(out).write_text(json.dumps(facts, default=str))
