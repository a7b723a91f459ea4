"""Glomeruli as objects: a QuPath GeoJSON and a measurement table per test and external slide, and a summary."""


rule objects:
    input:
        prediction=ancient(f"results/predictions/{FINAL_STAGE}/{{slide}}.zarr"),
        prediction_content=provenance(
            f"results/predictions/{FINAL_STAGE}/{{slide}}.zarr"
        ),
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
    output:
        geojson="results/objects/{slide}.geojson",
        table="results/objects/{slide}.csv",
        provenance=provenance("results/objects/{slide}.geojson"),
    log:
        "results/logs/objects/{slide}.log",
    wildcard_constraints:
        slide=one_of(PSEUDO_IDS),
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        threshold=config["inference"]["threshold"],
        min_area_um2=config["objects"]["min_area_um2"],
        mpp=config["data"]["mpp"],
        code=code("objects.py"),
    script:
        "../workflow_scripts/objects.py"


rule objects_summary:
    input:
        **store_inputs("stores", slide_stores(PSEUDO_IDS)),
        tables=expand("results/objects/{slide}.csv", slide=PSEUDO_IDS),
    output:
        "results/objects/summary.csv",
        provenance=provenance("results/objects/summary.csv"),
    log:
        "results/logs/objects_summary.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        mpp=config["data"]["mpp"],
        code=code("objects_summary.py"),
    script:
        "../workflow_scripts/objects_summary.py"
