"""Slides to OME-Zarr stores: one job per slide."""


rule ingest:
    input:
        unpack(slide_inputs),
    output:
        directory("results/slides/{slide}.zarr"),
    params:
        data_root=DATA_ROOT,
        ingest=section("ingest"),
        code=code("tilepipe.ingest", "tilepipe.dataset"),
    log:
        "results/logs/ingest/{slide}.log",
    benchmark:
        "results/benchmarks/ingest/{slide}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/tilepipe.yaml"
    script:
        "../workflow_scripts/ingest.py"


rule slides:
    input:
        slide_stores(ALL_IDS),
