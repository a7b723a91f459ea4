"""The input data folder in the Kaggle ``hubmap-kidney-segmentation`` layout.

::

    train/{id}.tiff, optional train/{id}.json (polygons)
                                       (slides may also be .tif, .ome.tif, .ome.tiff or .svs,
                                       as the HuBMAP portal names them)
    train.csv                          id,encoding
    test/{id}.tiff
    sample_submission.csv              id,predicted (ids and order of the output)
    HuBMAP-20-dataset_information.csv  image_file,width_pixels,height_pixels,...,patient_number,...
    external/{id}.tiff                 optional unlabeled slides

Every inconsistency is an :class:`InputError` naming the file that is wrong.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path

import pandas as pd

from tilepipe.errors import InputError

TRAIN_CSV = "train.csv"
SUBMISSION_CSV = "sample_submission.csv"
INFO_CSV = "HuBMAP-20-dataset_information.csv"
SPLITS = ("train", "test", "external")
# Longest first: "x.ome.tif" is slide "x", not "x.ome".
SLIDE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs")

_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_id(slide_id: object, source: str | os.PathLike) -> str:
    """Return ``slide_id`` as a string if it matches ``[A-Za-z0-9_-]+``.

    Anything else (path separators, dots, spaces, empty) is an InputError
    naming ``source``: ids become file names, so no path tricks.
    """
    text = str(slide_id)
    if not _ID.fullmatch(text):
        raise InputError(source, f"slide id {text!r} is not of the form [A-Za-z0-9_-]+")
    return text


def slide_id_of(name: str) -> str | None:
    """The slide id a file name stands for (the name without a suffix of :data:`SLIDE_SUFFIXES`,
    matched case-insensitively), or None when it has none of them."""
    lower = name.lower()
    for suffix in SLIDE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def patient_key(patient: object) -> str:
    """A patient number as the string that identifies the patient: 63921, 63921.0, "63921.0" and " 63921" are one."""
    if isinstance(patient, float) and patient.is_integer():
        patient = int(patient)
    return str(patient).strip().removesuffix(".0")


def check_regular_file(path: Path) -> Path:
    """Return ``path`` if it is a file or a link that ends at one; else raise :class:`InputError` naming it.

    Names the problem: a dangling link (and its target), a link loop, a folder.
    """
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        if not path.is_symlink():
            raise InputError(path, "file is missing") from None
        raise InputError(path, f"is a dangling symbolic link (its target {os.readlink(path)} does not exist)") from None
    except (RuntimeError, OSError) as error:  # a loop: RuntimeError before Python 3.13, OSError(ELOOP) after
        raise InputError(path, f"cannot be resolved: symbolic link loop ({error})") from None
    if not target.is_file():
        raise InputError(path, f"is not a regular file ({target} is a folder or a device)")
    return path


def check_folds(folds: dict, train_patients: set[str], source: str | os.PathLike | None) -> None:
    """Check the config's ``folds`` section against the train patients (keys as :func:`patient_key` gives).

    Every patient of ``folds.patients`` must have a train slide; without
    explicit patients there must be at least ``folds.n`` of them. Raises
    :class:`InputError` naming ``source`` (where the patients were read).
    """
    if folds.get("patients"):
        for k, members in enumerate(folds["patients"]):
            for patient in members:
                if patient_key(patient) not in train_patients:
                    raise InputError(
                        source,
                        f"folds.patients[{k}] names patient {patient}, who has no train slide here "
                        f"(train patients: {', '.join(sorted(train_patients)) or 'none'})",
                    )
    elif len(train_patients) < folds["n"]:
        raise InputError(
            source, f"{len(train_patients)} train patient(s) cannot make folds.n = {folds['n']} patient-grouped folds"
        )


def read_id_csv(path: str | os.PathLike, columns: tuple[str, ...], what: str = "table") -> pd.DataFrame:
    """Return a CSV keyed by slide ids (train.csv, sample_submission.csv, an ``id,predicted`` truth) as strings.

    ``columns[0]`` holds the ids (for ``image_file``: file names whose stem is
    the id); ids are stripped of surrounding blanks, checked with
    :func:`check_id` and unique. Empty cells are empty strings. ``what``
    names the file in messages ("sample submission"). Raises InputError
    naming the file when it is missing, empty, unreadable, lacks a column or
    repeats an id.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise InputError(path, f"{what} does not exist") from err
    except pd.errors.EmptyDataError as err:
        raise InputError(path, f"{what} is empty: it has no header") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(path, f"{what} is not a readable CSV ({err})") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        names = ", ".join(map(repr, missing))
        plural = "s" if len(missing) > 1 else ""
        raise InputError(path, f"{what} has no {names} column{plural} (columns: {', '.join(table.columns)})")
    key = columns[0]
    table[key] = table[key].str.strip()
    for value in table[key]:
        check_id(slide_id_of(value) or Path(value).stem if key == "image_file" else value, path)
    repeated = table[key][table[key].duplicated()].tolist()
    if repeated:
        raise InputError(path, f"id {repeated[0]} is listed more than once")
    return table


class KaggleDataset:
    """A data folder in the Kaggle layout, read lazily and validated.

    Ids come from the TIFF files of each split folder (sorted), except the
    test ids, which come from ``sample_submission.csv`` in its order.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "data folder does not exist")

    # -- files -------------------------------------------------------------
    def _slides_in(self, split: str) -> dict[str, Path]:
        folder = self.root / split
        if not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            stem = slide_id_of(path.name)
            if stem is not None and not path.name.startswith("."):
                slide_id = check_id(stem, path)
                check_regular_file(path)
                if slide_id in found:
                    raise InputError(
                        path, f"two slide files for slide {slide_id}: {found[slide_id].name} and {path.name}"
                    )
                found[slide_id] = path
        return found

    @cached_property
    def _tiffs(self) -> dict[str, dict[str, Path]]:
        return {split: self._slides_in(split) for split in SPLITS}

    def _read_csv(self, name: str, columns: tuple[str, ...], required: bool = True) -> pd.DataFrame | None:
        path = self.root / name
        if not path.is_file():
            if required:
                raise InputError(path, "file is missing")
            return None
        return read_id_csv(path, columns, name)

    @cached_property
    def train_table(self) -> pd.DataFrame:
        """``train.csv`` as strings: id, encoding (empty string = empty mask)."""
        table = self._read_csv(TRAIN_CSV, ("id", "encoding"), required=False)
        return table if table is not None else pd.DataFrame({"id": [], "encoding": []}, dtype=str)

    @cached_property
    def info_table(self) -> pd.DataFrame:
        """The dataset information CSV as strings, indexed by slide id."""
        table = self._read_csv(INFO_CSV, ("image_file", "width_pixels", "height_pixels", "patient_number"))
        table.index = [slide_id_of(f) or Path(f).stem for f in table["image_file"]]
        return table

    @cached_property
    def test_ids(self) -> list[str]:
        """Test ids in ``sample_submission.csv`` order."""
        path = self.root / SUBMISSION_CSV
        table = self._read_csv(SUBMISSION_CSV, ("id",), required=bool(self._tiffs["test"]))
        ids = [] if table is None else list(table["id"])
        for slide_id in ids:
            if slide_id not in self._tiffs["test"]:
                raise InputError(path, f"id {slide_id} has no slide test/{slide_id}.tiff")
        for slide_id in self._tiffs["test"]:
            if slide_id not in ids:
                raise InputError(self._tiffs["test"][slide_id], f"test slide {slide_id} has no row in {SUBMISSION_CSV}")
        return ids

    @property
    def train_ids(self) -> list[str]:
        return list(self._tiffs["train"])

    @property
    def external_ids(self) -> list[str]:
        return list(self._tiffs["external"])

    def split_of(self, slide_id: str) -> str:
        for split in SPLITS:
            if slide_id in self._tiffs[split]:
                return split
        raise InputError(self.root, f"no slide {slide_id} in {', '.join(SPLITS)}")

    def tiff_path(self, slide_id: str) -> Path:
        return self._tiffs[self.split_of(slide_id)][slide_id]

    def polygons_path(self, slide_id: str) -> Path | None:
        """``train/{id}.json`` if it exists, else None."""
        path = self.root / "train" / f"{slide_id}.json"
        if self.split_of(slide_id) != "train" or not (path.exists() or path.is_symlink()):
            return None
        return check_regular_file(path)

    def rle(self, slide_id: str) -> str | None:
        """The slide's ``train.csv`` encoding, or None without a row."""
        rows = self.train_table.loc[self.train_table["id"] == slide_id, "encoding"]
        return None if rows.empty else str(rows.iloc[0])

    def expected_shape(self, slide_id: str) -> tuple[int, int] | None:
        """``(height_pixels, width_pixels)`` from the information CSV; None for external slides."""
        if slide_id not in self.info_table.index:
            if self.split_of(slide_id) == "external":
                return None
            raise InputError(self.root / INFO_CSV, f"slide {slide_id} has no row (image_file {slide_id}.tiff)")
        row = self.info_table.loc[slide_id]
        try:
            return int(row["height_pixels"]), int(row["width_pixels"])
        except ValueError as err:
            raise InputError(self.root / INFO_CSV, f"slide {slide_id}: width/height is not an integer") from err

    def patient(self, slide_id: str) -> str:
        """The slide's ``patient_number`` as a string (error if missing)."""
        self.expected_shape(slide_id)
        value = patient_key(self.info_table.loc[slide_id, "patient_number"])
        if not value:
            raise InputError(self.root / INFO_CSV, f"slide {slide_id} has no patient_number")
        return value

    def validate(self, folds: dict | None = None) -> None:
        """Check the cross-file consistency; raise InputError on the first problem.

        Every train.csv id has a train slide; every train and test slide has
        a row in the information CSV; every train slide has a mask source
        (an RLE row or polygons). With ``folds`` (the config's ``folds``
        section): every patient of ``folds.patients`` has a train slide, and
        without explicit patients there are at least ``folds.n`` train patients.
        """
        path = self.root / TRAIN_CSV
        for slide_id in self.train_table["id"]:
            if slide_id not in self._tiffs["train"]:
                raise InputError(path, f"id {slide_id} has no slide train/{slide_id}.tiff")
        for slide_id in [*self.train_ids, *self.test_ids]:
            self.expected_shape(slide_id)
        for slide_id in self.train_ids:
            if self.polygons_path(slide_id) is None and self.rle(slide_id) is None:
                raise InputError(
                    self._tiffs["train"][slide_id],
                    f"train slide {slide_id} has no row in {TRAIN_CSV} and no {slide_id}.json",
                )
        if folds is not None:
            self._validate_folds(folds)

    def _validate_folds(self, folds: dict) -> None:
        check_folds(folds, {self.patient(slide_id) for slide_id in self.train_ids}, self.root / INFO_CSV)
