"""Training: one GPU job per stage and fold (stage 2 adds the pseudo-labelled slides)."""


rule train_model:
    input:
        unpack(training_inputs),
    output:
        model="results/models/{stage}/fold{fold}/model.pt",
        metrics="results/models/{stage}/fold{fold}/metrics.csv",
        provenance=provenance("results/models/{stage}/fold{fold}/model.pt"),
    log:
        "results/models/{stage}/fold{fold}/train.log",
    benchmark:
        "results/benchmarks/train/{stage}/fold{fold}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: config["train"]["num_workers"] + 1
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 720 * attempt,
    params:
        settings=lambda wildcards: training_settings(wildcards.stage),
        state=lambda wildcards: f"results/state/{wildcards.stage}/fold{wildcards.fold}/last.pt",
        code=code("train.py"),
    script:
        "../workflow_scripts/train.py"


rule train:
    input:
        stage_models(STAGES),
