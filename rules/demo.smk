"""The embedded demo: a synthetic dataset in the Kaggle layout (data.root: null)."""

if IS_DEMO:

    rule demo_train_slide:
        output:
            truth="results/demo/truth/{slide}.rle",
            tiff="results/demo/data/train/{slide}.tiff",
            polygons="results/demo/data/train/{slide}.json",
            provenance=provenance("results/demo/truth/{slide}.rle"),
        log:
            "results/logs/demo_slide/{slide}.log",
        wildcard_constraints:
            slide=one_of(TRAIN_IDS),
        conda:
            "../envs/tilepipe.yaml"
        params:
            demo=section("demo"),
            seed=config["seed"],
            code=code("demo_slide.py"),
        script:
            "../workflow_scripts/demo_slide.py"

    use rule demo_train_slide as demo_test_slide with:
        output:
            truth="results/demo/truth/{slide}.rle",
            tiff="results/demo/data/test/{slide}.tiff",
            provenance=provenance("results/demo/truth/{slide}.rle"),
        wildcard_constraints:
            slide=one_of(TEST_IDS),

    use rule demo_train_slide as demo_external_slide with:
        output:
            truth="results/demo/truth/{slide}.rle",
            tiff="results/demo/data/external/{slide}.tiff",
            provenance=provenance("results/demo/truth/{slide}.rle"),
        wildcard_constraints:
            slide=one_of(EXTERNAL_IDS),

    rule demo_tables:
        input:
            truth=expand("results/demo/truth/{slide}.rle", slide=ALL_IDS),
        output:
            truth="results/demo/truth.csv",
            info=data_file(INFO_CSV),
            train=data_file(TRAIN_CSV),
            submission=data_file(SUBMISSION_CSV),
            provenance=provenance("results/demo/truth.csv"),
        log:
            "results/logs/demo_tables.log",
        conda:
            "../envs/tilepipe.yaml"
        params:
            demo=section("demo"),
            seed=config["seed"],
            code=code("demo_tables.py"),
        script:
            "../workflow_scripts/demo_tables.py"
