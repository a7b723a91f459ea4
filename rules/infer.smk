"""Whole-slide inference: stitched centre crops, fold ensemble and flip TTA.

A train slide's prediction is out of fold, by its experiment's model that held it out
({root}: results for main, results/experiments/NAME for the others); a test or external
slide's, under results/, is the ensemble's (every member's fold models, weighted).
"""


rule predict:
    input:
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
        models=prediction_models,
        folds="results/folds.csv",
    output:
        directory("{root}/predictions/{stage}/{slide}.zarr"),
        windows="{root}/predictions/{stage}/{slide}.windows.csv",
        provenance=provenance("{root}/predictions/{stage}/{slide}.zarr"),
    log:
        "{root}/logs/predict/{stage}/{slide}.log",
    benchmark:
        "{root}/benchmarks/predict/{stage}/{slide}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=prediction_mem_mb,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        # What a prediction depends on: not inference.threshold (only the
        # submission cuts at it), not the runtime-only batch size. Out-of-fold
        # predictions run every window (no gate): eval applies and sweeps it.
        # An ensemble of unequal weights adds them (one per model).
        inference=prediction_inference,
        mpp=config["data"]["mpp"],
        device=config["train"]["device"],
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"
