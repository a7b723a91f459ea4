"""Helpers and input functions shared by the rules (no rules here)."""

from pathlib import Path

from tilepipe.config import RUNTIME_KEYS, check_settings
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


# One definition per wildcard for every rule; rules narrow `slide` further
# where only some ids apply.
wildcard_constraints:
    slide="[A-Za-z0-9_-]+",
    stage="stage1|stage2",
    fold=r"\d+",


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


def fold_ids():
    patients = config["folds"]["patients"]
    return list(range(len(patients) if patients else config["folds"]["n"]))


def training_settings(stage):
    """Everything a training job of ``stage`` depends on, as plain sorted dicts.

    Stage 2 takes `pseudo.epochs` and `pseudo.lr` where they are set.
    """
    train = result_settings("train")
    if stage == "stage2":
        pseudo = config["pseudo"]
        for key in ("epochs", "lr"):
            train[key] = train[key] if pseudo[key] is None else pseudo[key]
    return {
        "seed": config["seed"],
        "mpp": config["data"]["mpp"],
        "model": section("model"),
        "loss": section("loss"),
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


# Host memory of a training job (first attempt): measured per encoder, batch,
# input size, device and DataLoader workers (tilepipe/resources.py).
TRAIN_MEM_MB = training_memory_mb(config["model"], config["train"])


def pretrained_model(wildcards):
    """The file in pretrained.stage1 that becomes stage-1 fold ``wildcards.fold``'s model."""
    return PRETRAINED_FILES[wildcards.fold]


PSEUDO_IDS = TEST_IDS + EXTERNAL_IDS


def stage_models(stage):
    return expand(
        "results/models/{stage}/fold{fold}/model.pt", stage=stage, fold=fold_ids()
    )


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
    stage_models(FINAL_STAGE)
    if config["apply"]["models"] is None
    else [
        f"results/apply/models/fold{k}/model.pt" for k in range(len(APPLY_MODEL_FILES))
    ]
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
            inputs["init"] = f"results/models/stage1/fold{wildcards.fold}/model.pt"
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
