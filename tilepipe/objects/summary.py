"""One row per slide from its object table: how many glomeruli, how large, how sure, at which pixel size."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tilepipe.atomic import atomic_output

__all__ = ["SUMMARY_COLUMNS", "slide_summary", "write_summary"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SUMMARY_COLUMNS = [
    "slide",
    "mpp",
    "mpp_source",
    "objects",
    "total_area_um2",
    *[f"area_um2_q{round(q * 100):02d}" for q in QUANTILES],
    "mean_probability",
    "mean_uncertainty",
    "qa_uncertain_fraction",
]


def slide_summary(slide_id: str, table: pd.DataFrame, mpp: float, mpp_source: str) -> dict[str, Any]:
    """Return the summary row of one slide from its object ``table`` (columns of ``tilepipe.objects.export``).

    Areas in square micrometres (quantiles over objects; NaN without
    objects), ``mean_probability`` and ``mean_uncertainty`` weighted by
    object area (NaN without objects or without an uncertainty map).
    ``qa_uncertain_fraction``, the QA score: the share of the slide's
    predicted glomerulus area where the ensemble's runs disagree strongly
    (``uncertain_fraction`` weighted by area; NaN likewise). Outlines are
    always somewhat uncertain; a slide whose share stands well above the
    others' (another stain, another scanner) is one to look at.
    """
    areas = table["area_um2"].to_numpy(dtype=np.float64)
    weights = table["area_px"].to_numpy(dtype=np.float64)
    row: dict[str, Any] = {
        "slide": slide_id,
        "mpp": mpp,
        "mpp_source": mpp_source,
        "objects": len(table),
        "total_area_um2": round(float(areas.sum()), 3),
    }
    for q in QUANTILES:
        row[f"area_um2_q{round(q * 100):02d}"] = round(float(np.quantile(areas, q)), 3) if len(areas) else np.nan
    for name, column in (
        ("mean_probability", "mean_probability"),
        ("mean_uncertainty", "mean_uncertainty"),
        ("qa_uncertain_fraction", "uncertain_fraction"),
    ):
        values = pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series(np.nan, table.index)
        values = values.to_numpy(dtype=np.float64)
        usable = ~np.isnan(values)
        row[name] = round(float(np.average(values[usable], weights=weights[usable])), 4) if usable.any() else np.nan
    return row


def write_summary(out_csv: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the per-slide summary ``rows`` (:func:`slide_summary`) as a CSV, atomically."""
    frame = pd.DataFrame(list(rows), columns=SUMMARY_COLUMNS)
    with atomic_output(Path(out_csv)) as tmp:
        frame.to_csv(tmp, index=False)
