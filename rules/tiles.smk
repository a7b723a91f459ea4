"""Tile index per slide: both grids with mask, tissue and intensity statistics."""


rule tile_index:
    input:
        "results/slides/{slide}.zarr",
    output:
        "results/tiles/{slide}.parquet",
    params:
        tiles=section("tiles"),
        code=code("tilepipe.tile_index"),
    log:
        "results/logs/tile_index/{slide}.log",
    benchmark:
        "results/benchmarks/tile_index/{slide}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/tilepipe.yaml"
    script:
        "../workflow_scripts/tile_index.py"


rule tiles:
    input:
        tile_indices(ALL_IDS),
