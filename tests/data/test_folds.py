import numpy as np
import pandas as pd
import pytest

from tilepipe.data.folds import make_folds, read_folds, write_folds
from tilepipe.errors import InputError

SOURCE = "data/HuBMAP-20-dataset_information.csv"
RECIPE_PATIENTS = [[63921], [68250], [65631], [67177]]


def recipe_like_slides() -> pd.DataFrame:
    """Fifteen slides of eight patients, some patients with several slides."""
    patients = [
        63921,
        63921,
        68250,
        65631,
        65631,
        65631,
        67177,
        67548,
        67548,
        68138,
        68304,
        68555,
        68555,
        69000,
        70000,
    ]
    return pd.DataFrame(
        {
            "slide": [f"s{i:02d}" for i in range(len(patients))][::-1],
            "patient": patients,
            "n_masked": [40, 10, 80, 5, 5, 5, 30, 100, 20, 60, 0, 15, 15, 70, 25],
        }
    )


def test_explicit_patients_hold_out_their_slides_and_train_the_rest():
    slides = recipe_like_slides()
    folds = make_folds(slides, 4, RECIPE_PATIENTS, seed=0, source=SOURCE)
    assert list(folds.columns) == ["slide", "patient", "fold"]
    assert folds["slide"].is_monotonic_increasing
    assert folds["fold"].dtype == np.int64
    by_patient = folds.groupby("patient")["fold"].unique()
    for fold, members in enumerate(RECIPE_PATIENTS):
        for patient in members:
            assert list(by_patient[str(patient)]) == [fold]
    others = {str(p) for p in slides["patient"]} - {str(p) for m in RECIPE_PATIENTS for p in m}
    assert (folds[folds["patient"].isin(others)]["fold"] == -1).all()
    assert len(folds) == len(slides)


def test_explicit_patients_define_the_number_of_folds():
    for n_folds in [None, 4]:
        folds = make_folds(recipe_like_slides(), n_folds, [[63921], [68250, 67177]], seed=0)
        assert sorted(set(folds["fold"])) == [-1, 0, 1]


def test_automatic_split_groups_patients_and_balances_masked_tiles():
    slides = recipe_like_slides()
    folds = make_folds(slides, 3, None, seed=1, source=SOURCE)
    assert set(folds["fold"]) == {0, 1, 2}
    assert (folds.groupby("patient")["fold"].nunique() == 1).all()
    masked = slides.set_index("slide")["n_masked"]
    per_fold = folds.assign(n=folds["slide"].map(masked)).groupby("fold")["n"].sum()
    # Patient totals 50, 80, 15, 30, 120, 60, 0, 30, 70, 25 (sum 480): greedy reaches 160 each.
    assert per_fold.max() - per_fold.min() <= 25


def test_automatic_split_follows_the_greedy_rule():
    slides = pd.DataFrame({"slide": list("abcde"), "patient": [1, 2, 3, 4, 5], "n_masked": [50, 40, 30, 20, 10]})
    folds = make_folds(slides, 2, None, seed=0).set_index("slide")["fold"]
    # 50 -> A; 40 -> B; 30 -> B (40 < 50); 20 -> A (50 < 70); 10 -> A (70 = 70, A has fewer patients)
    assert folds["a"] == folds["d"] == folds["e"]
    assert folds["b"] == folds["c"] != folds["a"]


def test_automatic_split_without_masked_counts_is_round_robin():
    slides = pd.DataFrame({"slide": [f"s{i}" for i in range(10)], "patient": range(10)})
    folds = make_folds(slides, 4, None, seed=3)
    assert sorted(folds["fold"].value_counts()) == [2, 2, 3, 3]


def test_automatic_split_is_deterministic_and_seeded():
    slides = pd.DataFrame({"slide": [f"s{i}" for i in range(12)], "patient": range(12), "n_masked": [10] * 12})
    first = make_folds(slides, 3, None, seed=7)
    assert first.equals(make_folds(slides.sample(frac=1, random_state=5), 3, None, seed=7))
    draws = {tuple(make_folds(slides, 3, None, seed=s)["fold"]) for s in range(5)}
    assert len(draws) > 1


def test_patient_numbers_match_as_strings():
    slides = pd.DataFrame({"slide": ["a", "b"], "patient": [63921.0, "68250"]}, dtype=object)
    folds = make_folds(slides, None, [[63921], ["68250"]], seed=0)
    assert list(folds["patient"]) == ["63921", "68250"]
    assert list(folds["fold"]) == [0, 1]


@pytest.mark.parametrize("patient", [np.nan, None, " "])
def test_slide_without_patient_is_an_input_error(patient):
    slides = pd.DataFrame({"slide": ["a", "b", "c"], "patient": [1, patient, 2]}, dtype=object)
    with pytest.raises(InputError, match="no patient number for slide.*b") as err:
        make_folds(slides, 2, None, seed=0, source=SOURCE)
    assert err.value.path == SOURCE


def test_slide_listed_twice_is_an_input_error():
    slides = pd.DataFrame({"slide": ["a", "a", "b"], "patient": [1, 1, 2]})
    with pytest.raises(InputError, match="more than once: a") as err:
        make_folds(slides, 2, None, seed=0, source=SOURCE)
    assert err.value.path == SOURCE


def test_fewer_patients_than_folds_is_an_input_error():
    slides = pd.DataFrame({"slide": ["a", "b", "c"], "patient": [1, 1, 2]})
    with pytest.raises(InputError, match="2 patients cannot fill 3 folds") as err:
        make_folds(slides, 3, None, seed=0, source=SOURCE)
    assert err.value.path == SOURCE


def test_too_few_automatic_folds_is_an_input_error():
    slides = pd.DataFrame({"slide": ["a", "b"], "patient": [1, 2]})
    with pytest.raises(InputError, match="at least 2"):
        make_folds(slides, 1, None, seed=0)


@pytest.mark.parametrize(
    ("patients", "message"),
    [
        ([[63921], [12345]], r"patient 12345 \(fold 1 of folds.patients\) has no slide"),
        ([[63921], [68250, 63921]], "patient 63921 is listed in folds 0 and 1"),
        ([[63921], []], "fold 1 of folds.patients lists no patient"),
    ],
)
def test_bad_patient_lists_are_input_errors(patients, message):
    with pytest.raises(InputError, match=message) as err:
        make_folds(recipe_like_slides(), None, patients, seed=0, source=SOURCE)
    assert err.value.path == SOURCE


def test_folds_csv_round_trip(tmp_path):
    slides = pd.DataFrame({"slide": ["1e2425f28", "0486052bb", "2f6ecfcdf"], "patient": [63921, 68250, 67177]})
    folds = make_folds(slides, None, [[63921], [68250]], seed=0)
    path = tmp_path / "results" / "folds.csv"
    write_folds(folds, path)
    assert path.read_text().splitlines()[0] == "slide,patient,fold"
    assert read_folds(path).equals(folds)
    assert list(tmp_path.joinpath("results").iterdir()) == [path]


def test_read_folds_names_a_missing_column(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("slide,patient\na,1\n")
    with pytest.raises(InputError, match="missing column.*fold") as err:
        read_folds(path)
    assert err.value.path == str(path)
