"""Apply the ensemble to slides as users have them (apply.slides): NGFF stores, QuPath GeoJSON, object tables.

results/apply/slides/{id}.zarr (the ingested slide) and predictions/{id}.zarr
feed the rules; results/apply/{id}.zarr (rule apply_store) is the one store a
user opens: the slide's image with labels/glomeruli, probability, uncertainty.
"""


rule apply_ingest:
    input:
        tiff=lambda wildcards: APPLY_SLIDES[wildcards.slide],
    output:
        directory("results/apply/slides/{slide}.zarr"),
        provenance=provenance("results/apply/slides/{slide}.zarr"),
    log:
        "results/logs/apply_ingest/{slide}.log",
    benchmark:
        "results/benchmarks/apply_ingest/{slide}.tsv"
    wildcard_constraints:
        slide=one_of(list(APPLY_SLIDES)),
    conda:
        "../envs/tilepipe.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        ingest=slide_ingest_settings(),
        mpp=config["data"]["mpp"],
        code=code("ingest.py"),
    script:
        "../workflow_scripts/ingest.py"


rule apply_model:
    input:
        model=lambda wildcards: APPLY_MODEL_FILES[int(wildcards.fold)],
    output:
        model="results/apply/models/fold{fold}/model.pt",
        provenance=provenance("results/apply/models/fold{fold}/model.pt"),
    log:
        "results/logs/apply_model/fold{fold}.log",
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        code=code("import_pretrained.py"),
    script:
        "../workflow_scripts/import_pretrained.py"


rule apply_predict:
    input:
        store=ancient("results/apply/slides/{slide}.zarr"),
        store_content=provenance("results/apply/slides/{slide}.zarr"),
        models=APPLY_MODELS,
    output:
        directory("results/apply/predictions/{slide}.zarr"),
        windows="results/apply/predictions/{slide}.windows.csv",
        provenance=provenance("results/apply/predictions/{slide}.zarr"),
    log:
        "results/logs/apply_predict/{slide}.log",
    benchmark:
        "results/benchmarks/apply_predict/{slide}.tsv"
    wildcard_constraints:
        slide=one_of(list(APPLY_SLIDES)),
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        gpu=1,
        # 8 GB per attempt and ensemble member (a folder of models: one member).
        mem_mb=lambda wildcards, attempt: 8000
        * attempt
        * (len(ENSEMBLE) if config["apply"]["models"] is None else 1),
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        inference=APPLY_INFERENCE,
        mpp=config["data"]["mpp"],
        device=config["train"]["device"],
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"


rule apply_objects:
    input:
        prediction=ancient("results/apply/predictions/{slide}.zarr"),
        prediction_content=provenance("results/apply/predictions/{slide}.zarr"),
        store=ancient("results/apply/slides/{slide}.zarr"),
        store_content=provenance("results/apply/slides/{slide}.zarr"),
    output:
        geojson="results/apply/{slide}.geojson",
        table="results/apply/{slide}.csv",
        provenance=provenance("results/apply/{slide}.geojson"),
    log:
        "results/logs/apply_objects/{slide}.log",
    wildcard_constraints:
        slide=one_of(list(APPLY_SLIDES)),
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


rule apply_store:
    input:
        store=ancient("results/apply/slides/{slide}.zarr"),
        store_content=provenance("results/apply/slides/{slide}.zarr"),
        prediction=ancient("results/apply/predictions/{slide}.zarr"),
        prediction_content=provenance("results/apply/predictions/{slide}.zarr"),
    output:
        directory("results/apply/{slide}.zarr"),
        provenance=provenance("results/apply/{slide}.zarr"),
    log:
        "results/logs/apply_store/{slide}.log",
    benchmark:
        "results/benchmarks/apply_store/{slide}.tsv"
    wildcard_constraints:
        slide=one_of(list(APPLY_SLIDES)),
    conda:
        "../envs/tilepipe.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        threshold=config["inference"]["threshold"],
        code=code("apply_store.py"),
    script:
        "../workflow_scripts/apply_store.py"


rule apply_summary:
    input:
        **store_inputs(
            "stores",
            expand("results/apply/slides/{slide}.zarr", slide=list(APPLY_SLIDES)),
        ),
        tables=expand("results/apply/{slide}.csv", slide=list(APPLY_SLIDES)),
    output:
        "results/apply/summary.csv",
        provenance=provenance("results/apply/summary.csv"),
    log:
        "results/logs/apply_summary.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        mpp=config["data"]["mpp"],
        code=code("objects_summary.py"),
    script:
        "../workflow_scripts/objects_summary.py"
