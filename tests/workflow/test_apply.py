"""`snakemake apply`: slides as users have them -> NGFF stores, QuPath GeoJSON, object tables, a summary."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel

from tests.workflow.runner import TINY, copy_run, run_snakemake, scheduled_jobs

pytestmark = pytest.mark.slow

APERIO = "Aperio Image Library v12.0.15\r\n640x480 (240x240) JPEG/RGB Q=70|AppMag = 40|MPP = 0.25|Date = x"


def user_slides(folder):
    """Two slides as a lab has them: an SVS-like TIFF at 0.25 um/px and an OME-TIFF that states nothing."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    image = rng.integers(150, 256, (480, 640, 3), dtype=np.uint8)
    tifffile.imwrite(folder / "lab_A.svs", image, tile=(128, 128), description=APERIO)
    tifffile.imwrite(folder / "case-2.ome.tif", image[:300, :400], tile=(128, 128), ome=True)
    (folder / "notes.txt").write_text("not a slide")
    return folder


@pytest.fixture(scope="module")
def applied(tiny_run, tmp_path_factory):
    run = copy_run(tiny_run, tmp_path_factory.mktemp("apply") / "run")
    slides = user_slides(run.parent / "slides")
    overlay = {**TINY, "apply": {"slides": str(slides), "models": None}}
    dry = run_snakemake(run, "apply", "-n", overlay=overlay)
    run_snakemake(run, "apply", overlay=overlay)
    return run, dry


def test_apply_uses_the_trained_ensemble_without_training(applied):
    _, dry = applied
    rules = {job.rule for job in scheduled_jobs(dry)}
    assert rules == {"apply_ingest", "apply_predict", "apply_store", "apply_objects", "apply_summary", "apply"}


def test_stores_open_as_ome_zarr_with_micrometres(applied):
    run, _ = applied
    path = run / "results/apply/lab_A.zarr"
    image = open_ome_zarr(zarr.open_group(path, mode="r"))
    assert isinstance(image, Image) and not isinstance(image, ImageLabel)
    assert sorted(image.labels.label_paths) == ["glomeruli", "probability", "uncertainty"]
    scale = zarr.open_group(path, mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"][1:] == [0.25, 0.25]
    slide = run / "results/apply/slides/lab_A.zarr"
    assert (path / "0" / "c" / "0" / "0" / "0").samefile(slide / "0" / "c" / "0" / "0" / "0"), "image linked"
    prediction = zarr.open_group(run / "results/apply/predictions/lab_A.zarr", mode="r")
    assert isinstance(open_ome_zarr(prediction), ImageLabel)
    source = prediction.attrs["ome"]["image-label"]["source"]["image"]
    assert (run / "results/apply/predictions/lab_A.zarr" / source).resolve() == slide.resolve()
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["labels/probability/0"][...], prediction["0"][...])


def test_objects_and_summary_per_slide(applied):
    run, _ = applied
    summary = pd.read_csv(run / "results/apply/summary.csv").set_index("slide")
    assert sorted(summary.index) == ["case-2", "lab_A"]
    assert summary.loc["lab_A", "mpp"] == 0.25 and summary.loc["lab_A", "mpp_source"] == "Aperio MPP"
    assert "assumed data.mpp" in summary.loc["case-2", "mpp_source"]
    for slide in ("lab_A", "case-2"):
        collection = json.loads((run / f"results/apply/{slide}.geojson").read_text())
        assert collection["type"] == "FeatureCollection"
        assert len(collection["features"]) == summary.loc[slide, "objects"]
    log = (run / "results/logs/apply_predict/lab_A.log").read_text()
    assert "resampled to the training resolution" in log, "0.25 um pixels: windows twice as wide"


def test_a_bad_slide_list_is_refused_before_any_job(tiny_run, tmp_path):
    missing = tmp_path / "nowhere.svs"
    result = run_snakemake(tmp_path, "apply", "-n", overlay={**TINY, "apply": {"slides": [str(missing)]}}, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "apply.slides: file is missing" in out and "nowhere.svs" in out
