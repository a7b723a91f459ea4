import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tilepipe.data.sampler import sample_epoch, training_tiles, validation_tiles
from tilepipe.errors import InputError


def tiles_with_bins(bin_counts: dict[int, int], slide: str = "a") -> pd.DataFrame:
    """Tiles with the given count per ``binned`` value; bin 0 is unmasked."""
    binned = np.concatenate([np.full(c, b, dtype=np.int64) for b, c in bin_counts.items()])
    return pd.DataFrame(
        {
            "slide": slide,
            "y": np.arange(binned.size, dtype=np.int64) * 1024,
            "binned": binned,
            "is_masked": binned > 0,
        }
    )


def test_recipe_example_bins_30_30_20_20_become_25_each():
    tiles = tiles_with_bins({0: 300, 1: 30, 2: 30, 3: 20, 4: 20})
    drawn = sample_epoch(tiles, epoch=0, seed=0)
    assert drawn["is_masked"].sum() == 100
    assert (~drawn["is_masked"]).sum() == 100
    # int(mean bin count) over the bins present in the 100 masked draws: 25 each
    assert drawn.loc[drawn["is_masked"], "binned"].value_counts().to_dict() == {1: 25, 2: 25, 3: 25, 4: 25}
    assert pd.RangeIndex(200).equals(drawn.index)


@pytest.mark.parametrize("seed", range(5))
def test_class_and_bin_balance(seed):
    tiles = tiles_with_bins({0: 1000, 1: 200, 2: 90, 3: 60, 4: 50})
    drawn = sample_epoch(tiles, epoch=seed, seed=seed)
    masked = drawn[drawn["is_masked"]]
    assert len(masked) == (~drawn["is_masked"]).sum() == 400
    counts = masked["binned"].value_counts()
    assert set(counts.index) == {1, 2, 3, 4}
    assert counts.nunique() == 1


def test_masked_tiles_come_first_bin_by_bin():
    drawn = sample_epoch(tiles_with_bins({0: 50, 1: 30, 3: 30}), epoch=1, seed=2)
    assert list(drawn["binned"]) == [1] * 25 + [3] * 25 + [0] * 50


def test_bins_that_do_not_divide_n_lose_the_remainder_like_the_recipe():
    tiles = tiles_with_bins({0: 10, 1: 500, 2: 500, 3: 500})
    drawn = sample_epoch(tiles, epoch=0, seed=0)
    assert (~drawn["is_masked"]).sum() == 10
    # 10 masked draws over 3 bins (or fewer) -> int(10 / b) per bin
    bins = drawn.loc[drawn["is_masked"], "binned"].value_counts()
    assert bins.sum() == len(bins) * (10 // len(bins))


def test_drawn_rows_come_from_the_input():
    tiles = tiles_with_bins({0: 70, 1: 20, 2: 10, 4: 5})
    tiles["x"] = np.random.default_rng(0).integers(0, 10**6, len(tiles))
    drawn = sample_epoch(tiles, epoch=3, seed=11)
    rows = set(map(tuple, tiles.to_numpy()))
    assert all(tuple(r) in rows for r in drawn.to_numpy())
    assert list(drawn.columns) == list(tiles.columns)


def test_sampling_is_a_pure_function_of_seed_fold_epoch():
    tiles = tiles_with_bins({0: 500, 1: 100, 2: 80, 3: 40, 4: 30})
    first = sample_epoch(tiles, epoch=4, seed=42, fold=1)
    assert first.equals(sample_epoch(tiles.copy(), epoch=4, seed=42, fold=1))
    for other in [
        {"epoch": 5, "seed": 42, "fold": 1},
        {"epoch": 4, "seed": 43, "fold": 1},
        {"epoch": 4, "seed": 42, "fold": 2},
    ]:
        assert not first["y"].equals(sample_epoch(tiles, **other)["y"])


def test_sampling_is_deterministic_across_processes():
    code = (
        "import numpy as np, pandas as pd\n"
        "from tilepipe.data.sampler import sample_epoch\n"
        "b = np.repeat([0, 1, 2, 3, 4], [300, 60, 50, 40, 30])\n"
        "t = pd.DataFrame({'slide': 'a', 'y': np.arange(b.size), 'binned': b, 'is_masked': b > 0})\n"
        "print(list(sample_epoch(t, epoch=2, seed=9, fold=3)['y']))\n"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
    b = np.repeat([0, 1, 2, 3, 4], [300, 60, 50, 40, 30])
    t = pd.DataFrame({"slide": "a", "y": np.arange(b.size), "binned": b, "is_masked": b > 0})
    assert runs.pop().strip() == str(list(sample_epoch(t, epoch=2, seed=9, fold=3)["y"]))


@pytest.mark.parametrize("bins", [{0: 10}, {1: 5, 2: 5}])
def test_one_class_only_is_a_clear_error(bins):
    with pytest.raises(InputError, match="needs masked and unmasked tiles"):
        sample_epoch(tiles_with_bins(bins), epoch=0, seed=0, fold=2)


def fold_fixture():
    tiles = pd.concat([tiles_with_bins({0: 3, 1: 1}, slide=s) for s in ["a", "b", "c", "d"]], ignore_index=True)
    tiles["img_std"] = np.tile([5.0, 10.0, 30.0, 40.0], 4)
    tiles["tissue_ratio"] = np.tile([0.0, 0.5, 0.05, 0.9], 4)
    folds = pd.DataFrame({"slide": ["a", "b", "c", "d"], "patient": [1, 2, 3, 4], "fold": [0, 1, -1, 0]})
    return tiles, folds


def test_training_tiles_are_other_folds_and_always_train():
    tiles, folds = fold_fixture()
    train = training_tiles(tiles, folds, fold=0)
    assert list(train["slide"].unique()) == ["b", "c"]
    assert len(train) == 8
    assert pd.RangeIndex(8).equals(train.index)
    assert list(validation_tiles(tiles, folds, fold=0)["slide"].unique()) == ["a", "d"]
    assert list(training_tiles(tiles, folds, fold=1)["slide"].unique()) == ["a", "c", "d"]


def test_background_filters_are_strict_thresholds():
    tiles, folds = fold_fixture()
    train = training_tiles(tiles, folds, fold=0, min_img_std=10)
    assert list(train["img_std"]) == [30.0, 40.0] * 2
    train = training_tiles(tiles, folds, fold=0, min_tissue_ratio=0.1, min_img_std=10)
    assert list(train["img_std"]) == [40.0] * 2
    valid = validation_tiles(tiles, folds, fold=0, min_tissue_ratio=0.0)
    assert list(valid["tissue_ratio"]) == [0.5, 0.05, 0.9] * 2


def test_unknown_fold_or_slide_is_an_error():
    tiles, folds = fold_fixture()
    with pytest.raises(InputError, match="fold 2 is not a fold"):
        training_tiles(tiles, folds, fold=2)
    with pytest.raises(InputError, match="fold -1 is not a fold"):
        validation_tiles(tiles, folds, fold=-1)
    with pytest.raises(InputError, match="slide.*d have no fold"):
        training_tiles(tiles, folds[folds["slide"] != "d"], fold=0)
