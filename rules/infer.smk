"""Whole-slide inference: stitched centre crops, fold ensemble and flip TTA."""


rule predict:
    input:
        store="results/slides/{slide}.zarr",
        models=lambda wildcards: stage_models(wildcards.stage),
        folds="results/folds.csv",
    output:
        directory("results/predictions/{stage}/{slide}.zarr"),
        provenance=provenance("results/predictions/{stage}/{slide}.zarr"),
    log:
        "results/logs/predict/{stage}/{slide}.log",
    benchmark:
        "results/benchmarks/predict/{stage}/{slide}.tsv"
    wildcard_constraints:
        stage="stage1|stage2",
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        inference=inference_settings(),
        device=config["train"]["device"],
        amp=config["train"]["amp"],
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"
