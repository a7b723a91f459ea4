"""Patient-grouped folds over the train slides."""


rule folds:
    input:
        info=data_file(INFO_CSV),
        tiles=tile_indices(TRAIN_IDS),
    output:
        "results/folds.csv",
        provenance=provenance("results/folds.csv"),
    log:
        "results/logs/folds.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        slides=TRAIN_IDS,
        folds=section("folds"),
        seed=config["seed"],
        code=code("folds.py"),
    script:
        "../workflow_scripts/folds.py"
