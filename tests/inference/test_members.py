"""Which fold models predict a slide (tilepipe.inference.members)."""

import pytest

from tilepipe.data.folds import ALWAYS_TRAIN
from tilepipe.errors import InputError
from tilepipe.inference.members import models_for_slide

MODELS = [f"results/models/stage1/fold{k}/model.pt" for k in range(3)]
FOLDS = {"train_a": 0, "train_b": 2, "always": ALWAYS_TRAIN}
FOLDS_CSV = "results/folds.csv"


def test_a_train_slide_gets_the_model_that_held_it_out():
    assert models_for_slide(MODELS, FOLDS, "train_a", FOLDS_CSV) == [MODELS[0]]
    assert models_for_slide(MODELS, FOLDS, "train_b", FOLDS_CSV) == [MODELS[2]]


def test_other_slides_get_the_whole_ensemble():
    assert models_for_slide(MODELS, FOLDS, "test_slide", FOLDS_CSV) == MODELS


def test_fold_numbers_match_whole_folder_names():
    models = ["m/fold1/model.pt", "m/fold12/model.pt"]
    assert models_for_slide(models, {"s": 12}, "s", FOLDS_CSV) == ["m/fold12/model.pt"]
    assert models_for_slide(models, {"s": 1}, "s", FOLDS_CSV) == ["m/fold1/model.pt"]


@pytest.mark.parametrize(
    ("slide", "models", "problem"),
    [("always", MODELS, "is in no held-out fold"), ("train_a", MODELS[1:], "no model of that fold")],
)
def test_a_train_slide_without_an_out_of_fold_model_names_the_folds_file(slide, models, problem):
    with pytest.raises(InputError, match=problem) as error:
        models_for_slide(models, FOLDS, slide, FOLDS_CSV)
    assert error.value.path == FOLDS_CSV
    assert str(error.value).startswith(f"{FOLDS_CSV}: train slide {slide} ")
