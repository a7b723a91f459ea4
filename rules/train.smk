"""Stage-1 training: one GPU job per fold."""


rule train_stage1:
    input:
        folds="results/folds.csv",
        tiles=tile_indices(TRAIN_IDS),
        stores=slide_stores(TRAIN_IDS),
    output:
        model="results/models/stage1/fold{fold}/model.pt",
        metrics="results/models/stage1/fold{fold}/metrics.csv",
    params:
        settings=training_settings(),
        state=lambda wildcards: f"results/state/stage1/fold{wildcards.fold}/last.pt",
        code=code("tilepipe.train"),
    log:
        "results/models/stage1/fold{fold}/train.log",
    benchmark:
        "results/benchmarks/train_stage1/fold{fold}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../envs/tilepipe.yaml"
    script:
        "../workflow_scripts/train.py"


rule train:
    input:
        expand("results/models/stage1/fold{fold}/model.pt", fold=fold_ids()),
