"""Probability stores (tilepipe.stores.probability): format, cutoffs, errors, and no torch import."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from tilepipe.errors import InputError
from tilepipe.stores.probability import foreground_cutoff, read_probability, write_probability


def test_cutoff_is_the_threshold_in_stored_units_rounded_half_up():
    assert foreground_cutoff(0.5) == 128  # round(p * 255) >= 128 exactly when p >= 0.5
    assert (foreground_cutoff(0.0), foreground_cutoff(1.0), foreground_cutoff(0.4)) == (0, 255, 102)
    with pytest.raises(InputError, match="threshold"):
        foreground_cutoff(1.5)


def test_round_trip_keeps_values_and_skips_empty_chunks(tmp_path):
    probability = np.zeros((40, 56), np.uint8)
    probability[3:9, 30:50] = np.arange(120, dtype=np.uint8).reshape(6, 20)
    write_probability(tmp_path / "p.zarr", probability, chunk=16)
    array = read_probability(tmp_path / "p.zarr")
    np.testing.assert_array_equal(array[...], probability)
    assert array.chunks == (16, 16) and array.metadata.dimension_names == ("y", "x")
    assert zarr.open_group(tmp_path / "p.zarr", mode="r").attrs["tilepipe"]["content"] == "probability"
    assert array.nchunks_initialized == 3  # only chunks (0, 1), (0, 2), (0, 3) hold non-zero values
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_bad_stores_name_the_path(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        read_probability(tmp_path / "missing.zarr")
    assert "missing.zarr" in str(err.value)
    group = zarr.open_group(tmp_path / "wrong.zarr", mode="w", zarr_format=3)
    group.create_array("0", shape=(4, 4, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="not a \\(y, x\\) uint8") as err:
        read_probability(tmp_path / "wrong.zarr")
    assert "wrong.zarr" in str(err.value)
    with pytest.raises(ValueError):
        write_probability(tmp_path / "f.zarr", np.zeros((4, 4), np.float32), chunk=4)
    assert not (tmp_path / "f.zarr").exists()


def test_rules_that_only_read_predictions_do_not_import_torch():
    modules = "tilepipe.stores.probability, tilepipe.evaluation.submission, tilepipe.inference.pseudo, tilepipe.evaluation.dice, tilepipe.evaluation.plots"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
