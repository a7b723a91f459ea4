"""Helpers and input functions shared by the rules (no rules here)."""

import re
from pathlib import Path

from tilepipe.config import RUNTIME_KEYS, check_settings
from tilepipe.experiments import (
    DEFAULT_EXPERIMENT,
    ensemble_weights,
    experiment_names,
    experiment_of_root,
    experiment_root,
    experiment_sections,
)
from tilepipe.io.kaggle import (
    INFO_CSV,
    SUBMISSION_CSV,
    TRAIN_CSV,
    KaggleDataset,
    check_folds,
    patient_key,
)
from tilepipe.demo.plan import plan_demo
from tilepipe.inference.settings import prediction_settings
from tilepipe.io.user_inputs import list_model_files, list_slides
from tilepipe.model.pretrained import pretrained_file
from tilepipe.provenance import provenance_path, script_code_hash
from tilepipe.resources import training_memory_mb

# Settings that contradict each other, before any job (the schema checked each alone).
check_settings(config)

IS_DEMO = config["data"]["root"] is None

if IS_DEMO:
    DATA_ROOT = "results/demo/data"
    DEMO_SLIDES = {s.id: s for s in plan_demo(config["demo"], config["seed"])}
    check_folds(
        config["folds"],
        {patient_key(s.patient) for s in DEMO_SLIDES.values() if s.split == "train"},
        None,
    )
    SPLIT = {slide_id: s.split for slide_id, s in DEMO_SLIDES.items()}
    TIFF = {
        slide_id: f"{DATA_ROOT}/{s.split}/{slide_id}.tiff"
        for slide_id, s in DEMO_SLIDES.items()
    }
    POLYGONS = {
        slide_id: f"{DATA_ROOT}/train/{slide_id}.json"
        for slide_id, s in DEMO_SLIDES.items()
        if s.label_source == "polygons"
    }
else:
    DATA_ROOT = config["data"]["root"]
    DATASET = KaggleDataset(DATA_ROOT)
    # Every cross-file problem, and folds the dataset cannot make, before any job.
    DATASET.validate(config["folds"])
    SPLIT = {
        slide_id: DATASET.split_of(slide_id)
        for slide_id in [*DATASET.train_ids, *DATASET.test_ids, *DATASET.external_ids]
    }
    TIFF = {slide_id: str(DATASET.tiff_path(slide_id)) for slide_id in SPLIT}
    POLYGONS = {
        slide_id: str(DATASET.polygons_path(slide_id))
        for slide_id in DATASET.train_ids
        if DATASET.polygons_path(slide_id) is not None
    }

TRAIN_IDS = [s for s in SPLIT if SPLIT[s] == "train"]
TEST_IDS = [s for s in SPLIT if SPLIT[s] == "test"]
EXTERNAL_IDS = [s for s in SPLIT if SPLIT[s] == "external"]
ALL_IDS = list(SPLIT)

# Named experiments (tilepipe.experiments): name -> the folder of its models,
# predictions, eval and benchmarks (main: results, others results/experiments/NAME);
# ENSEMBLE: the members that predict test and external slides -> weight (sum 1).
EXPERIMENTS = experiment_names(config)
ROOTS = {name: experiment_root(name) for name in EXPERIMENTS}
ENSEMBLE = ensemble_weights(config)


# One definition per wildcard for every rule; rules narrow `slide` further
# where only some ids apply.
wildcard_constraints:
    slide="[A-Za-z0-9_-]+",
    stage="stage1|stage2",
    fold=r"\d+",
    root="|".join(re.escape(root) for root in ROOTS.values()),


def section(name):
    """Config section ``name`` as a plain dict with sorted keys (stable params repr)."""
    return dict(sorted(config[name].items()))


SCRIPTS = Path(workflow.basedir) / "workflow_scripts"


def code(script):
    """Hash of the tilepipe code workflow_scripts/``script`` imports: a param, so edits rerun it and touches do not."""
    return script_code_hash(SCRIPTS / script)


def provenance(artifact):
    """The provenance file a job writes beside its first output ``artifact`` (a declared output)."""
    return str(provenance_path(artifact))


def data_file(name):
    return f"{DATA_ROOT}/{name}"


def table_inputs(wildcards=None):
    """The dataset CSVs a slide job reads (train.csv only where it exists)."""
    tables = [data_file(INFO_CSV)]
    if IS_DEMO or Path(data_file(TRAIN_CSV)).is_file():
        tables.append(data_file(TRAIN_CSV))
    return tables


def slide_inputs(wildcards):
    """The TIFF of a slide, its polygons file if any, and the dataset CSVs."""
    inputs = {"tiff": TIFF[wildcards.slide], "tables": table_inputs()}
    if wildcards.slide in POLYGONS:
        inputs["polygons"] = POLYGONS[wildcards.slide]
    return inputs


def slide_stores(ids):
    return expand("results/slides/{slide}.zarr", slide=ids)


def store_inputs(name, paths):
    """Named inputs for the stores (folders) ``paths``: ``name``, the stores, taken
    ``ancient`` (a folder's mtime says nothing of its content), and
    ``{name}_content``, their provenance files, whose content digest changes
    exactly when a store's content does; so a store rewritten with the same
    content reruns nothing."""
    return {
        name: [ancient(p) for p in paths],
        f"{name}_content": [provenance(p) for p in paths],
    }


def tile_indices(ids):
    return expand("results/tiles/{slide}.parquet", slide=ids)


def one_of(ids):
    """A wildcard pattern matching exactly these ids (none if empty)."""
    return "|".join(ids) if ids else "(?!)"


def result_settings(name):
    """Config section ``name`` without its runtime-only keys (``tilepipe.config.RUNTIME_KEYS``; a params value)."""
    skip = RUNTIME_KEYS.get(name, ())
    return {k: v for k, v in section(name).items() if k not in skip}


def experiment_section(experiment, name):
    """Experiment ``experiment``'s section ``name`` (model, loss or train: its overlay merged over the top-level
    section), sorted, without runtime-only keys (a params value; main's equals ``result_settings(name)``).
    """
    skip = RUNTIME_KEYS.get(name, ())
    merged = experiment_sections(config, experiment)[name]
    return {k: v for k, v in merged.items() if k not in skip}


def fold_ids():
    patients = config["folds"]["patients"]
    return list(range(len(patients) if patients else config["folds"]["n"]))


def training_settings(stage, experiment=DEFAULT_EXPERIMENT):
    """Everything a training job of ``stage`` of ``experiment`` depends on, as plain sorted dicts.

    Stage 2 takes `pseudo.epochs` and `pseudo.lr` where they are set.
    """
    train = experiment_section(experiment, "train")
    if stage == "stage2":
        pseudo = config["pseudo"]
        for key in ("epochs", "lr"):
            train[key] = train[key] if pseudo[key] is None else pseudo[key]
    return {
        "seed": config["seed"],
        "mpp": config["data"]["mpp"],
        "model": experiment_section(experiment, "model"),
        "loss": experiment_section(experiment, "loss"),
        "train": train,
        "sampling": section("sampling"),
    }


STAGES = ["stage1", "stage2"] if config["pseudo"]["enabled"] else ["stage1"]
FINAL_STAGE = STAGES[-1]
# Stage-1 fold models from a folder (rule import_pretrained) instead of
# training; every fold's file is found (or refused) before any job.
PRETRAINED_STAGE1 = config["pretrained"]["stage1"]
TRAINED_STAGES = [s for s in STAGES if not (s == "stage1" and PRETRAINED_STAGE1)]
PRETRAINED_FILES = (
    {str(k): str(pretrained_file(PRETRAINED_STAGE1, k)) for k in fold_ids()}
    if PRETRAINED_STAGE1
    else {}
)


# Host memory of a training job (first attempt) per experiment: measured per
# network, batch, input size, device and DataLoader workers (tilepipe/resources.py).
TRAIN_MEM_MB = {
    name: training_memory_mb(sections["model"], sections["train"])
    for name, sections in ((n, experiment_sections(config, n)) for n in EXPERIMENTS)
}


def train_mem_mb(wildcards, attempt):
    """Host memory in MB of training job ``wildcards`` (its experiment's figure) at ``attempt``."""
    return TRAIN_MEM_MB[experiment_of_root(wildcards.root)] * attempt


def pretrained_model(wildcards):
    """The file in pretrained.stage1 that becomes stage-1 fold ``wildcards.fold``'s model."""
    return PRETRAINED_FILES[wildcards.fold]


PSEUDO_IDS = TEST_IDS + EXTERNAL_IDS


def stage_models(stage, experiment=DEFAULT_EXPERIMENT):
    """The fold models of ``stage`` (a name or a list) of ``experiment``."""
    return expand(
        "{root}/models/{stage}/fold{fold}/model.pt",
        root=ROOTS[experiment],
        stage=stage,
        fold=fold_ids(),
    )


def predicted_by_ensemble(wildcards):
    """Whether prediction ``wildcards`` is the ensemble's: a test or external slide under results/
    (a train slide's is its experiment's, out of fold)."""
    return (
        wildcards.root == ROOTS[DEFAULT_EXPERIMENT] and wildcards.slide not in TRAIN_IDS
    )


def prediction_mem_mb(wildcards, attempt):
    """Host memory (MB) of prediction job ``wildcards``: 8 GB per attempt, times the ensemble's
    members for the ensemble's predictions (every member's models are held at once)."""
    return 8000 * attempt * (len(ENSEMBLE) if predicted_by_ensemble(wildcards) else 1)


def ensemble_models(stage):
    """The fold models of ``stage`` of every ensemble member, member by member: they predict test and external slides."""
    return [path for name in ENSEMBLE for path in stage_models(stage, name)]


def ensemble_inference(gate=True):
    """The prediction params of the ensemble (``prediction_settings``, the members' shared input geometry), with
    ``weights`` (one per model of ``ensemble_models``) only when the members' weights differ.
    """
    train = experiment_sections(config, next(iter(ENSEMBLE)))["train"]
    settings = prediction_settings(config, gate=gate, train=train)
    if len(set(ENSEMBLE.values())) > 1:
        settings["weights"] = [w for w in ENSEMBLE.values() for _ in fold_ids()]
    return settings


def prediction_models(wildcards):
    """The models of a prediction: a train slide's are its experiment's (predict keeps the one that held it out);
    a test or external slide's under results/ are the ensemble's."""
    if predicted_by_ensemble(wildcards):
        return ensemble_models(wildcards.stage)
    return stage_models(wildcards.stage, experiment_of_root(wildcards.root))


def prediction_inference(wildcards):
    """The ``inference`` params of prediction ``wildcards``: out-of-fold ones ungated, at their experiment's geometry."""
    if predicted_by_ensemble(wildcards):
        return ensemble_inference(gate=wildcards.slide not in OOF_IDS)
    train = experiment_sections(config, experiment_of_root(wildcards.root))["train"]
    return prediction_settings(config, gate=wildcards.slide not in OOF_IDS, train=train)


# ------------------------------------------------------------------- apply
# Slides as users have them, listed and checked before any job; their
# ensemble: this run's final-stage models, or a folder's (imported by
# rule apply_model).
APPLY_SLIDES = (
    {} if config["apply"]["slides"] is None else list_slides(config["apply"]["slides"])
)
APPLY_MODEL_FILES = (
    []
    if config["apply"]["models"] is None
    else list_model_files(config["apply"]["models"])
)
APPLY_MODELS = (
    ensemble_models(FINAL_STAGE)
    if config["apply"]["models"] is None
    else [
        f"results/apply/models/fold{k}/model.pt" for k in range(len(APPLY_MODEL_FILES))
    ]
)
# The prediction params of apply_predict: the ensemble's (its weights), or a folder's plain mean.
APPLY_INFERENCE = (
    ensemble_inference()
    if config["apply"]["models"] is None
    else prediction_settings(config)
)


def slide_ingest_settings():
    """The ingest settings that can change a user's slide store (the params of apply_ingest):
    the section without the keys that only concern training labels (a user's slide has none).
    """
    return {k: v for k, v in section("ingest").items() if k != "polygon_coordinates"}


def predictions(stage, ids):
    return expand("results/predictions/{stage}/{slide}.zarr", stage=stage, slide=ids)


def training_inputs(wildcards):
    """Train slides' tiles and stores; stage 2 adds every pseudo-labelled slide; the stain
    reference when data.stain_normalisation is set."""
    inputs = {
        "folds": "results/folds.csv",
        "tiles": tile_indices(TRAIN_IDS),
        **store_inputs("stores", slide_stores(TRAIN_IDS)),
    }
    if wildcards.stage == "stage2":
        inputs["pseudo_tiles"] = expand(
            "results/tiles/pseudo/{slide}.parquet", slide=PSEUDO_IDS
        )
        inputs.update(store_inputs("pseudo_stores", slide_stores(PSEUDO_IDS)))
        inputs.update(
            store_inputs(
                "pseudo_labels", expand("results/pseudo/{slide}.zarr", slide=PSEUDO_IDS)
            )
        )
        if config["pseudo"]["init"] == "stage1":
            inputs["init"] = (
                f"{wildcards.root}/models/stage1/fold{wildcards.fold}/model.pt"
            )
    if config["data"]["stain_normalisation"]:
        inputs["stain"] = "results/stain/reference.json"
    return inputs


# ---------------------------------------------------------------- evaluation


def slide_patient(slide_id):
    """The patient number of a train slide as a string (as folds.csv writes it)."""
    if IS_DEMO:
        return str(DEMO_SLIDES[slide_id].patient)
    return DATASET.patient(slide_id)


def held_out_ids():
    """Train slides in a fold >= 0: those with an out-of-fold prediction (all of them with automatic folds)."""
    patients = config["folds"]["patients"]
    if not patients:
        return TRAIN_IDS
    listed = {patient_key(p) for fold in patients for p in fold}
    return [s for s in TRAIN_IDS if slide_patient(s) in listed]


OOF_IDS = held_out_ids()


def overlay_inputs(wildcards):
    """The slide store and prediction of an overlay, and the truth CSV for a demo test slide."""
    store = f"results/slides/{wildcards.slide}.zarr"
    prediction = f"results/predictions/{wildcards.stage}/{wildcards.slide}.zarr"
    inputs = {
        "store": ancient(store),
        "store_content": provenance(store),
        "prediction": ancient(prediction),
        "prediction_content": provenance(prediction),
    }
    if IS_DEMO and wildcards.slide in TEST_IDS:
        inputs["truth"] = "results/demo/truth.csv"
    return inputs


def experiment_eval_inputs(wildcards=None):
    """Per experiment: its final stage's out-of-fold Dice table and fold models (eval_experiments)."""
    return {
        "dice": [f"{ROOTS[name]}/eval/dice_{FINAL_STAGE}.csv" for name in EXPERIMENTS],
        "models": [stage_models(FINAL_STAGE, name)[0] for name in EXPERIMENTS],
    }


def experiment_benchmarks():
    """Per experiment: the benchmark files of its training jobs and of its final stage's out-of-fold predictions."""
    return {
        name: {
            "train": expand(
                "{root}/benchmarks/train/{stage}/fold{fold}.tsv",
                root=ROOTS[name],
                stage=TRAINED_STAGES if name == DEFAULT_EXPERIMENT else STAGES,
                fold=fold_ids(),
            ),
            "predict": expand(
                "{root}/benchmarks/predict/{stage}/{slide}.tsv",
                root=ROOTS[name],
                stage=FINAL_STAGE,
                slide=OOF_IDS,
            ),
        }
        for name in EXPERIMENTS
    }
