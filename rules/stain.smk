"""Stain normalisation (data.stain_normalisation set): the training slides' colour statistics, once."""


rule stain_reference:
    input:
        **store_inputs("stores", slide_stores(TRAIN_IDS)),
    output:
        reference="results/stain/reference.json",
        provenance=provenance("results/stain/reference.json"),
    log:
        "results/logs/stain_reference.log",
    conda:
        "../envs/tilepipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        method=config["data"]["stain_normalisation"],
        saturation_threshold=config["tiles"]["saturation_threshold"],
        geometry={
            "input_size": config["train"]["input_size"],
            "read_level": config["train"]["read_level"],
            "tile_size": config["tiles"]["size"],
        },
        code=code("stain_reference.py"),
    script:
        "../workflow_scripts/stain_reference.py"
