"""Training: one GPU job per experiment, stage and fold (stage 2 adds the pseudo-labelled slides).

{root} is an experiment's folder: results for main, results/experiments/NAME for the others.
"""


rule train_model:
    input:
        unpack(training_inputs),
    output:
        model="{root}/models/{stage}/fold{fold}/model.pt",
        metrics="{root}/models/{stage}/fold{fold}/metrics.csv",
        provenance=provenance("{root}/models/{stage}/fold{fold}/model.pt"),
    log:
        "{root}/models/{stage}/fold{fold}/train.log",
    benchmark:
        "{root}/benchmarks/train/{stage}/fold{fold}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: config["train"]["num_workers"] + 1
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=lambda wildcards, attempt: 720 * attempt,
    params:
        settings=lambda wildcards: training_settings(
            wildcards.stage, experiment_of_root(wildcards.root)
        ),
        state=lambda wildcards: f"{wildcards.root}/state/{wildcards.stage}/fold{wildcards.fold}/last.pt",
        code=code("train.py"),
    script:
        "../workflow_scripts/train.py"


if PRETRAINED_STAGE1:

    # Stage-1 fold models taken from pretrained.stage1 instead of trained.
    ruleorder: import_pretrained > train_model

    rule import_pretrained:
        input:
            model=pretrained_model,
        output:
            model="results/models/stage1/fold{fold}/model.pt",
            provenance=provenance("results/models/stage1/fold{fold}/model.pt"),
        log:
            "results/logs/import_pretrained/fold{fold}.log",
        conda:
            "../envs/tilepipe.yaml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
            runtime=lambda wildcards, attempt: 30 * attempt,
        params:
            code=code("import_pretrained.py"),
        script:
            "../workflow_scripts/import_pretrained.py"


rule train:
    input:
        [stage_models(STAGES, name) for name in EXPERIMENTS],
