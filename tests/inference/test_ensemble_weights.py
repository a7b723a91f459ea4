"""A weighted ensemble (``ensemble.weights`` of mixed-model experiments): a weighted mean of members, each averaged over flips."""

import numpy as np
import pandas as pd
import pytest
import zarr

from tests.inference.test_predict import predict, random_image, slide_store
from tests.inference.test_spread_and_windows import ChannelModel, exact_geometry
from tilepipe.errors import InputError
from tilepipe.stores.probability import read_probability, read_uncertainty

SETTINGS = exact_geometry(tta=["none", "hflip"], clf_threshold=None)


class NeverRuns(ChannelModel):
    def encode(self, x):
        raise AssertionError("a member of weight 0 never runs")


def outputs(tmp_path, name, models, **settings):
    """Probability, spread (both (y, x) uint8) and the window table of a prediction of one random slide."""
    image = random_image(90, 100, seed=3)
    out = tmp_path / name / "s.zarr"
    windows = tmp_path / name / "s.windows.csv"
    predict(slide_store(tmp_path, image, f"{name}.zarr"), out, models, windows_path=windows, **settings)
    return read_probability(out)[...], read_uncertainty(out)[...], pd.read_csv(windows), image


def test_weights_one_and_zero_give_the_first_member_alone(tmp_path):
    alone = outputs(tmp_path, "alone", [ChannelModel(0)], **SETTINGS)
    weighted = outputs(tmp_path, "weighted", [ChannelModel(0), NeverRuns(1)], **SETTINGS, weights=[1.0, 0.0])
    assert np.array_equal(alone[0], weighted[0]) and np.array_equal(alone[1], weighted[1])
    pd.testing.assert_frame_equal(alone[2], weighted[2])


def test_equal_weights_are_the_plain_mean_exactly(tmp_path):
    plain = outputs(tmp_path, "plain", [ChannelModel(0), ChannelModel(1)], **SETTINGS)
    equal = outputs(tmp_path, "equal", [ChannelModel(0), ChannelModel(1)], **SETTINGS, weights=[2.5, 2.5])
    assert np.array_equal(plain[0], equal[0]) and np.array_equal(plain[1], equal[1])
    pd.testing.assert_frame_equal(plain[2], equal[2])


def test_unequal_weights_weigh_each_member_over_its_flips(tmp_path):
    """Weights 3:1 on red and green: p = (3 red + green) / 4; sigma^2 = E_w[p^2] - E_w[p]^2 = 3/16 (red - green)^2."""
    probability, spread, _, image = outputs(
        tmp_path, "three", [ChannelModel(0), ChannelModel(1)], **SETTINGS, weights=[3, 1]
    )
    red, green = image[0].astype(float), image[1].astype(float)
    assert np.abs(probability - (3 * red + green) / 4).max() <= 1
    expected_spread = np.minimum(2 * np.sqrt(3 / 16) * np.abs(red - green), 255)
    assert np.abs(spread - expected_spread).max() <= 1.5
    recorded = zarr.open_group(tmp_path / "three" / "s.zarr", mode="r").attrs["tilepipe"]
    assert recorded["weights"] == [3.0, 1.0]


def test_unweighted_outputs_record_no_weights(tmp_path):
    outputs(tmp_path, "plain", [ChannelModel(0)], **SETTINGS)
    assert "weights" not in zarr.open_group(tmp_path / "plain" / "s.zarr", mode="r").attrs["tilepipe"]


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [1.0, -1.0], [0.0, 0.0]])
def test_weights_must_match_the_members(tmp_path, weights):
    with pytest.raises(InputError, match=r"weights: expected one weight >= 0 per model \(2 models\)"):
        outputs(tmp_path, "bad", [ChannelModel(0), ChannelModel(1)], **SETTINGS, weights=weights)
