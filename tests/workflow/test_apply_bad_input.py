"""`snakemake apply` on a slide it cannot read: a non-zero exit, the file named, nothing half-written."""

import numpy as np
import pytest
import tifffile

from tests.workflow.runner import TINY, copy_run, run_snakemake

pytestmark = pytest.mark.slow


def test_a_greyscale_slide_fails_its_ingest_naming_the_file_and_leaves_no_store(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    slides = tmp_path / "slides"
    slides.mkdir()
    tifffile.imwrite(slides / "grey.tif", np.full((300, 400), 200, np.uint8), tile=(128, 128))
    result = run_snakemake(run, "apply", overlay={**TINY, "apply": {"slides": str(slides)}}, check=False)
    assert result.returncode != 0
    log = (run / "results/logs/apply_ingest/grey.log").read_text()
    assert str(slides / "grey.tif") in log and "single-channel (greyscale or fluorescence)" in log
    leftovers = [p.name for p in (run / "results/apply").rglob("*")]  # slides/, predictions/ and the stores
    assert not [name for name in leftovers if name.startswith(("grey", ".grey"))], leftovers
