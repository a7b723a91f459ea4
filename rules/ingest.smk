"""Slides to OME-Zarr stores: one job per slide."""


rule ingest:
    input:
        unpack(slide_inputs),
    output:
        directory("results/slides/{slide}.zarr"),
        provenance=provenance("results/slides/{slide}.zarr"),
    log:
        "results/logs/ingest/{slide}.log",
    benchmark:
        "results/benchmarks/ingest/{slide}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        ingest=section("ingest"),
        mpp=config["data"]["mpp"],
        code=code("ingest.py"),
    script:
        "../workflow_scripts/ingest.py"


rule slides:
    input:
        slide_stores(ALL_IDS),
