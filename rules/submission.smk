"""The Kaggle submission: the final stage's predictions of the test slides as RLE."""


rule write_submission:
    input:
        **store_inputs("predictions", predictions(FINAL_STAGE, TEST_IDS)),
        sample=data_file(SUBMISSION_CSV),
    output:
        "results/submission.csv",
        provenance=provenance("results/submission.csv"),
    log:
        "results/logs/submission.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        threshold=config["inference"]["threshold"],
        code=code("submission.py"),
    script:
        "../workflow_scripts/submission.py"
