from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/tiles.smk"
include: "rules/folds.smk"
include: "rules/train.smk"


# The first rule is the default target; `submission` takes its place once it exists.
rule all:
    default_target: True
    input:
        rules.slides.input,
        rules.tiles.input,
        "results/folds.csv",
