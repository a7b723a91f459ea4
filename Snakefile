from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "tilepipe/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/tiles.smk"
include: "rules/folds.smk"
include: "rules/stain.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/pseudo.smk"
include: "rules/submission.smk"
include: "rules/objects.smk"
include: "rules/apply.smk"
include: "rules/eval.smk"


# Light rules run on the submit host in cluster runs (profiles/slurm); the
# target rules below have no job and are local anyway.
localrules:
    folds,
    write_submission,
    objects_summary,
    apply_summary,
    eval_stage,
    eval_summary,
    eval_experiments,
    plot_training,
    plot_slide_dice,
    plot_threshold_sweep,
    plot_overlay,


if IS_DEMO:

    localrules:
        demo_train_slide,
        demo_test_slide,
        demo_external_slide,
        demo_tables,
        eval_submission,


# Target rules; `submission` is the default. (Rules of included files cannot
# be the default target, so the targets live here.)
rule submission:
    default_target: True
    input:
        "results/submission.csv",
        "results/objects/summary.csv",


rule all:
    input:
        rules.slides.input,
        rules.tiles.input,
        "results/folds.csv",
        rules.train.input,
        "results/submission.csv",
        "results/objects/summary.csv",
        rules.eval.input,


# Slides as users have them (apply.slides): one NGFF store each (image and labels), QuPath GeoJSON,
# object tables and a summary under results/apply/.
rule apply:
    input:
        expand("results/apply/{slide}.zarr", slide=list(APPLY_SLIDES)),
        expand("results/apply/{slide}.geojson", slide=list(APPLY_SLIDES)),
        "results/apply/summary.csv" if APPLY_SLIDES else [],
