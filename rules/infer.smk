"""Whole-slide inference: stitched centre crops, fold ensemble and flip TTA."""


rule predict:
    input:
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
        models=lambda wildcards: stage_models(wildcards.stage),
        folds="results/folds.csv",
    output:
        directory("results/predictions/{stage}/{slide}.zarr"),
        windows="results/predictions/{stage}/{slide}.windows.csv",
        provenance=provenance("results/predictions/{stage}/{slide}.zarr"),
    log:
        "results/logs/predict/{stage}/{slide}.log",
    benchmark:
        "results/benchmarks/predict/{stage}/{slide}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        # What a prediction depends on: not inference.threshold (only the
        # submission cuts at it), not the runtime-only batch size. Out-of-fold
        # predictions run every window (no gate): eval applies and sweeps it.
        inference=lambda wildcards: prediction_settings(
            config, gate=wildcards.slide not in OOF_IDS
        ),
        mpp=config["data"]["mpp"],
        device=config["train"]["device"],
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"
