"""Evaluation: out-of-fold Dice and objects per slide, fold and stage (per experiment: {root}), the threshold and gate sweeps, the experiments side by side, the demo's submission, figures."""


rule eval_slide:
    input:
        prediction=ancient("{root}/predictions/{stage}/{slide}.zarr"),
        prediction_content=provenance("{root}/predictions/{stage}/{slide}.zarr"),
        # Written by predict with the store: each window's kept centre and classification score.
        windows="{root}/predictions/{stage}/{slide}.windows.csv",
        store=ancient("results/slides/{slide}.zarr"),
        store_content=provenance("results/slides/{slide}.zarr"),
    output:
        histogram="{root}/eval/{stage}/histograms/{slide}.csv",
        gates="{root}/eval/{stage}/gates/{slide}.csv",
        provenance=provenance("{root}/eval/{stage}/histograms/{slide}.csv"),
    log:
        "{root}/logs/eval_slide/{stage}/{slide}.log",
    wildcard_constraints:
        slide=one_of(OOF_IDS),
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        # The histogram is gated as configured; objects and the gate sweep
        # are at the submission's mask threshold.
        threshold=config["inference"]["threshold"],
        clf_threshold=config["inference"]["clf_threshold"],
        code=code("eval_slide.py"),
    script:
        "../workflow_scripts/eval_slide.py"


rule eval_stage:
    input:
        folds="results/folds.csv",
        histograms=expand(
            "{{root}}/eval/{{stage}}/histograms/{slide}.csv", slide=OOF_IDS
        ),
        gates=expand("{{root}}/eval/{{stage}}/gates/{slide}.csv", slide=OOF_IDS),
    output:
        dice=report(
            "{root}/eval/dice_{stage}.csv",
            caption="../report/dice_table.rst",
            category="Out-of-fold Dice",
            subcategory="{stage}",
            labels={
                "models": "{root}",
                "stage": "{stage}",
                "content": "Dice per slide",
            },
        ),
        sweep=report(
            "{root}/eval/threshold_sweep_{stage}.csv",
            caption="../report/sweep_table.rst",
            category="Out-of-fold Dice",
            subcategory="{stage}",
            labels={
                "models": "{root}",
                "stage": "{stage}",
                "content": "threshold sweep",
            },
        ),
        gates=report(
            "{root}/eval/gate_sweep_{stage}.csv",
            caption="../report/gate_table.rst",
            category="Out-of-fold Dice",
            subcategory="{stage}",
            labels={"models": "{root}", "stage": "{stage}", "content": "gate sweep"},
        ),
        provenance=provenance("{root}/eval/dice_{stage}.csv"),
    log:
        "{root}/logs/eval_stage/{stage}.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        threshold=config["inference"]["threshold"],
        mode=config["eval"]["threshold"],
        code=code("eval_stage.py"),
    script:
        "../workflow_scripts/eval_stage.py"


if IS_DEMO:

    rule eval_submission:
        input:
            **store_inputs("stores", slide_stores(TEST_IDS)),
            submission="results/submission.csv",
            truth="results/demo/truth.csv",
        output:
            report(
                "results/eval/submission_dice.csv",
                caption="../report/submission_dice.rst",
                category="Submission",
                labels={"content": "Dice and objects per test slide"},
            ),
            provenance=provenance("results/eval/submission_dice.csv"),
        log:
            "results/logs/eval_submission.log",
        conda:
            "../envs/tilepipe.yaml"
        params:
            code=code("eval_submission.py"),
        script:
            "../workflow_scripts/eval_submission.py"


rule eval_summary:
    input:
        dice=expand("results/eval/dice_{stage}.csv", stage=STAGES),
        sweeps=expand("results/eval/threshold_sweep_{stage}.csv", stage=STAGES),
        gates=expand("results/eval/gate_sweep_{stage}.csv", stage=STAGES),
        submission=["results/eval/submission_dice.csv"] if IS_DEMO else [],
    output:
        summary=report(
            "results/eval/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"content": "Dice summary"},
        ),
        threshold="results/eval/threshold.txt",
        provenance=provenance("results/eval/summary.csv"),
    log:
        "results/logs/eval_summary.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        stages=STAGES,
        final_stage=FINAL_STAGE,
        submission_threshold=config["inference"]["threshold"],
        submission_gate=config["inference"]["clf_threshold"],
        code=code("eval_summary.py"),
    script:
        "../workflow_scripts/eval_summary.py"


rule eval_experiments:
    input:
        unpack(experiment_eval_inputs),
    output:
        table=report(
            "results/eval/experiments.csv",
            caption="../report/experiments.rst",
            category="Experiments",
            labels={"content": "experiments side by side"},
        ),
        plot=report(
            "results/eval/experiments.png",
            caption="../report/experiments.rst",
            category="Experiments",
            labels={"content": "experiments side by side (figure)"},
        ),
        provenance=provenance("results/eval/experiments.csv"),
    log:
        "results/logs/eval_experiments.log",
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
    params:
        experiments=EXPERIMENTS,
        ensemble=ENSEMBLE,
        stage=FINAL_STAGE,
        # Read when present (their jobs' wall time); the inputs above come after them.
        benchmarks=experiment_benchmarks(),
        code=code("eval_experiments.py"),
    script:
        "../workflow_scripts/eval_experiments.py"


rule plot_training:
    input:
        lambda wildcards: expand(
            "results/models/{stage}/fold{fold}/metrics.csv",
            stage=wildcards.stage,
            fold=fold_ids(),
        ),
    output:
        report(
            "results/eval/training_{stage}.png",
            caption="../report/training.rst",
            category="Training",
            labels={"stage": "{stage}", "figure": "loss and Dice per epoch"},
        ),
        provenance=provenance("results/eval/training_{stage}.png"),
    log:
        "results/logs/plot_training/{stage}.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        code=code("eval_plot_training.py"),
    script:
        "../workflow_scripts/eval_plot_training.py"


rule plot_slide_dice:
    input:
        "results/eval/dice_{stage}.csv",
    output:
        report(
            "results/eval/dice_{stage}.png",
            caption="../report/dice_plot.rst",
            category="Out-of-fold Dice",
            subcategory="{stage}",
            labels={"stage": "{stage}", "content": "Dice per slide (figure)"},
        ),
        provenance=provenance("results/eval/dice_{stage}.png"),
    log:
        "results/logs/plot_slide_dice/{stage}.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        code=code("eval_plot_dice.py"),
    script:
        "../workflow_scripts/eval_plot_dice.py"


rule plot_threshold_sweep:
    input:
        dice=expand("results/eval/dice_{stage}.csv", stage=STAGES),
        sweeps=expand("results/eval/threshold_sweep_{stage}.csv", stage=STAGES),
    output:
        report(
            "results/eval/threshold_sweep.png",
            caption="../report/sweep_plot.rst",
            category="Summary",
            labels={"content": "threshold sweep (figure)"},
        ),
        provenance=provenance("results/eval/threshold_sweep.png"),
    log:
        "results/logs/plot_threshold_sweep.log",
    conda:
        "../envs/tilepipe.yaml"
    params:
        stages=STAGES,
        code=code("eval_plot_sweep.py"),
    script:
        "../workflow_scripts/eval_plot_sweep.py"


rule plot_gate_sweep:
    input:
        expand("results/eval/gate_sweep_{stage}.csv", stage=STAGES),
    output:
        report(
            "results/eval/gate_sweep.png",
            caption="../report/gate_plot.rst",
            category="Summary",
            labels={"content": "gate sweep (figure)"},
        ),
        provenance=provenance("results/eval/gate_sweep.png"),
    log:
        "results/logs/plot_gate_sweep.log",
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
    params:
        stages=STAGES,
        code=code("eval_plot_gate.py"),
    script:
        "../workflow_scripts/eval_plot_gate.py"


rule plot_overlay:
    input:
        unpack(overlay_inputs),
    output:
        report(
            "results/eval/overlays/{stage}/{slide}.png",
            caption="../report/overlay.rst",
            category="Overlays",
            subcategory="{stage}",
            labels={"stage": "{stage}", "slide": "{slide}"},
        ),
        provenance=provenance("results/eval/overlays/{stage}/{slide}.png"),
    log:
        "results/logs/plot_overlay/{stage}/{slide}.log",
    wildcard_constraints:
        slide=one_of(OOF_IDS + TEST_IDS),
    conda:
        "../envs/tilepipe.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        threshold=config["inference"]["threshold"],
        code=code("eval_plot_overlay.py"),
    script:
        "../workflow_scripts/eval_plot_overlay.py"


rule eval:
    input:
        "results/eval/summary.csv",
        "results/eval/experiments.csv",
        "results/eval/experiments.png",
        "results/eval/threshold.txt",
        "results/eval/threshold_sweep.png",
        "results/eval/gate_sweep.png",
        expand("results/eval/gate_sweep_{stage}.csv", stage=STAGES),
        expand("results/eval/training_{stage}.png", stage=TRAINED_STAGES),
        expand("results/eval/dice_{stage}.png", stage=STAGES),
        expand(
            "results/eval/overlays/{stage}/{slide}.png",
            stage=STAGES,
            slide=OOF_IDS + TEST_IDS,
        ),
