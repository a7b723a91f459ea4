"""Cross-validation folds grouped by patient: ``results/folds.csv``.

A fold is a set of held-out patients: the model of fold ``k`` trains on
every slide whose fold is not ``k`` and validates on the slides of fold
``k``. Fold ``-1`` marks slides that are always in training (patients in
no explicit list, as in the recipe).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.io.kaggle import patient_key

__all__ = ["ALWAYS_TRAIN", "make_folds", "write_folds", "read_folds"]

ALWAYS_TRAIN = -1
COLUMNS = ["slide", "patient", "fold"]


def make_folds(
    slides: pd.DataFrame,
    n_folds: int | None,
    patients: list[list] | None,
    *,
    seed: int,
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Assign every slide to a fold, keeping each patient's slides together.

    ``slides`` has columns ``slide`` (id) and ``patient``, and optionally
    ``n_masked`` (masked tiles of the slide). ``source`` is the file the
    patients came from (the dataset information CSV); errors name it.

    - ``patients`` given (the recipe: ``[[63921], [68250], [65631], [67177]]``):
      fold ``k`` holds the slides of the patients in ``patients[k]``; slides of
      patients in no list get fold ``-1`` (always in training). The number of
      folds is ``len(patients)`` and ``n_folds`` is not used.
    - ``patients`` None: an automatic split over ``n_folds`` (>= 2) folds that
      balances masked tiles. Patients, shuffled with ``seed`` to break ties and
      then sorted by their masked tiles (descending), each join the fold with
      the fewest masked tiles so far (then the fewest patients, then the
      lowest index). Without ``n_masked`` this spreads patients round-robin.

    Returns a DataFrame with columns ``slide, patient, fold`` (fold int64),
    sorted by slide. Raises InputError naming ``source`` for a slide without
    a patient, a slide listed twice, fewer patients than folds, an unknown or
    repeated patient in ``patients`` or an empty fold list; and InputError
    without a path when an automatic split gets ``n_folds`` below 2.
    """
    folds = _validated_slides(slides, source)
    known = set(folds["patient"])
    if patients is not None:
        fold_of = _explicit_folds(patients, known, source)
    else:
        if n_folds is None or n_folds < 2:
            raise InputError(None, f"folds.n must be at least 2 for an automatic split, got {n_folds}")
        if len(known) < n_folds:
            raise InputError(
                source, f"{len(known)} patients cannot fill {n_folds} folds (one patient per fold at least)"
            )
        masked = _masked_per_patient(folds)
        fold_of = _balanced_folds(masked, n_folds, seed)
    folds["fold"] = folds["patient"].map(lambda p: fold_of.get(p, ALWAYS_TRAIN)).astype(np.int64)
    return folds[COLUMNS].sort_values("slide", ignore_index=True)


def _validated_slides(slides: pd.DataFrame, source) -> pd.DataFrame:
    """Return a copy of ``slides`` with ids and patient numbers as str."""
    folds = slides.copy()
    missing = folds["patient"].isna() | (folds["patient"].astype(str).str.strip() == "")
    if missing.any():
        ids = ", ".join(map(str, folds.loc[missing, "slide"]))
        raise InputError(source, f"no patient number for slide(s) {ids}")
    duplicated = folds["slide"].duplicated()
    if duplicated.any():
        ids = ", ".join(map(str, folds.loc[duplicated, "slide"].unique()))
        raise InputError(source, f"slide(s) listed more than once: {ids}")
    folds["slide"] = folds["slide"].astype(str)
    folds["patient"] = folds["patient"].map(patient_key)
    return folds


def _explicit_folds(patients: list[list], known: set, source) -> dict:
    """Map each listed patient to the index of its list."""
    fold_of: dict = {}
    for fold, members in enumerate(patients):
        if not members:
            raise InputError(source, f"fold {fold} of folds.patients lists no patient")
        for patient in map(patient_key, members):
            if patient not in known:
                raise InputError(source, f"patient {patient} (fold {fold} of folds.patients) has no slide")
            if patient in fold_of:
                raise InputError(
                    source,
                    f"patient {patient} is listed in folds {fold_of[patient]} and {fold} of folds.patients",
                )
            fold_of[patient] = fold
    return fold_of


def _masked_per_patient(folds: pd.DataFrame) -> pd.Series:
    """Masked tiles per patient (0 without ``n_masked``), indexed by patient in sorted order."""
    if "n_masked" in folds:
        per_slide = folds["n_masked"].astype(np.int64)
    else:
        per_slide = pd.Series(0, index=folds.index, dtype=np.int64)
    return per_slide.groupby(folds["patient"]).sum().sort_index()


def _balanced_folds(masked: pd.Series, n_folds: int, seed: int) -> dict:
    """Greedy: the patient with the most masked tiles joins the emptiest fold, and so on."""
    order = np.random.default_rng(seed).permutation(len(masked))
    shuffled = masked.iloc[order]
    ranked = shuffled.iloc[np.argsort(-shuffled.to_numpy(), kind="stable")]
    fold_masked = [0] * n_folds
    fold_patients = [0] * n_folds
    fold_of = {}
    for patient, n_masked in ranked.items():
        fold = min(range(n_folds), key=lambda k: (fold_masked[k], fold_patients[k], k))
        fold_of[patient] = fold
        fold_masked[fold] += int(n_masked)
        fold_patients[fold] += 1
    return fold_of


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``slide,patient,fold`` to the CSV ``path`` atomically."""
    with atomic_output(path) as tmp:
        folds[COLUMNS].to_csv(tmp, index=False)


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a folds CSV written by :func:`write_folds`.

    Slide ids and patients are read as str (an id such as ``"1e2425f28"``
    is not a number); fold is int64. Raises InputError if a column is missing.
    """
    folds = pd.read_csv(path, dtype={"slide": str, "patient": str})
    missing = [c for c in COLUMNS if c not in folds]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    folds["fold"] = folds["fold"].astype(np.int64)
    return folds
