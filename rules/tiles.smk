"""Tile index per slide: both grids with mask, tissue and intensity statistics."""


rule tile_index:
    input:
        ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
    output:
        "results/tiles/{slide}.parquet",
        provenance=provenance("results/tiles/{slide}.parquet"),
    log:
        "results/logs/tile_index/{slide}.log",
    benchmark:
        "results/benchmarks/tile_index/{slide}.tsv"
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        tiles=section("tiles"),
        code=code("tile_index.py"),
    script:
        "../workflow_scripts/tile_index.py"


rule tiles:
    input:
        tile_indices(ALL_IDS),
