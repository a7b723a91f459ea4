"""The per-slide summary: counts, area quantiles, area-weighted means, the pixel size and its source."""

import numpy as np
import pandas as pd
import pytest

from tilepipe.objects import export
from tilepipe.objects.summary import SUMMARY_COLUMNS, slide_summary, write_summary


def table(areas_px, probabilities, uncertainties=None, mpp=0.5, uncertain=None) -> pd.DataFrame:
    rows = []
    for i, (area, p) in enumerate(zip(areas_px, probabilities, strict=True)):
        row = dict.fromkeys(export.TABLE_COLUMNS, 0)
        row |= {"area_px": area, "area_um2": area * mpp * mpp, "mean_probability": p}
        row["mean_uncertainty"] = None if uncertainties is None else uncertainties[i]
        row["uncertain_fraction"] = None if uncertain is None else uncertain[i]
        rows.append(row)
    return pd.DataFrame(rows, columns=export.TABLE_COLUMNS)


def test_counts_quantiles_and_area_weighted_means():
    row = slide_summary("s", table([100, 300], [0.6, 1.0], [0.2, 0.0]), 0.5, "Aperio MPP")
    assert (row["objects"], row["total_area_um2"], row["mpp_source"]) == (2, 100.0, "Aperio MPP")
    assert row["area_um2_q50"] == pytest.approx(50.0)
    assert row["mean_probability"] == pytest.approx((0.6 * 100 + 1.0 * 300) / 400)
    assert row["mean_uncertainty"] == pytest.approx(0.05)
    assert np.isnan(row["qa_uncertain_fraction"])


def test_the_qa_score_is_the_uncertain_share_of_the_predicted_area():
    row = slide_summary("s", table([100, 300], [0.6, 1.0], [0.2, 0.1], uncertain=[0.5, 0.1]), 0.5, "x")
    assert row["qa_uncertain_fraction"] == pytest.approx((0.5 * 100 + 0.1 * 300) / 400)


def test_no_uncertainty_map_and_no_objects_give_nan():
    assert np.isnan(slide_summary("s", table([10], [0.9]), 1.0, "x")["mean_uncertainty"])
    empty = slide_summary("e", table([], []), 1.0, "x")
    assert empty["objects"] == 0 and np.isnan(empty["area_um2_q50"]) and np.isnan(empty["mean_probability"])


def test_written_with_every_column(tmp_path):
    write_summary(tmp_path / "summary.csv", [slide_summary("s", table([4], [0.5]), 0.5, "x")])
    frame = pd.read_csv(tmp_path / "summary.csv")
    assert list(frame.columns) == SUMMARY_COLUMNS and frame.loc[0, "slide"] == "s"
