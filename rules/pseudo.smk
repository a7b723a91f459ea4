"""Pseudo-labels: the stage-1 ensemble labels the test and external slides for stage 2."""


rule pseudo_labels:
    input:
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
        prediction=ancient("results/predictions/stage1/{slide}.zarr"),
        prediction_content=provenance("results/predictions/stage1/{slide}.zarr"),
    output:
        directory("results/pseudo/{slide}.zarr"),
        provenance=provenance("results/pseudo/{slide}.zarr"),
    log:
        "results/logs/pseudo_labels/{slide}.log",
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        threshold=config["pseudo"]["threshold"],
        code=code("pseudo_labels.py"),
    script:
        "../workflow_scripts/pseudo_labels.py"


rule pseudo_tile_index:
    input:
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
        labels=ancient("results/pseudo/{slide}.zarr"),
        labels_content=provenance("results/pseudo/{slide}.zarr"),
    output:
        "results/tiles/pseudo/{slide}.parquet",
        provenance=provenance("results/tiles/pseudo/{slide}.parquet"),
    log:
        "results/logs/pseudo_tile_index/{slide}.log",
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        tiles=section("tiles"),
        code=code("tile_index.py"),
    script:
        "../workflow_scripts/tile_index.py"


rule pseudo:
    input:
        expand("results/tiles/pseudo/{slide}.parquet", slide=PSEUDO_IDS),
