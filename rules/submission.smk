"""The Kaggle submission: the final stage's predictions of the test slides as RLE."""


rule write_submission:
    input:
        sample=data_file(SUBMISSION_CSV),
        predictions=predictions(FINAL_STAGE, TEST_IDS),
    output:
        "results/submission.csv",
    log:
        "results/logs/submission.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        threshold=config["inference"]["threshold"],
        code=code("tilepipe.submission"),
    script:
        "../workflow_scripts/submission.py"
