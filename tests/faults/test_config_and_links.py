"""Config contradictions and broken links are refused at parse time, before any job, with the key or path named."""

from __future__ import annotations

import os

import pytest

from tests.workflow.runner import run_snakemake, write_kaggle_layout
from tilepipe.config import resolve
from tilepipe.errors import InputError
from tilepipe.io.kaggle import KaggleDataset

BAD_SETTINGS = [
    ({"tiles": {"size": 512, "shift": 512}}, "tiles.shift: the shifted grid's offset must be smaller than tiles.size"),
    ({"tiles": {"size": 256, "shift": 300}}, "tiles.shift"),
    ({"ingest": {"chunk": 65}}, "ingest.chunk: must be an even number of pixels"),
]


@pytest.mark.parametrize(("overlay", "message"), BAD_SETTINGS)
def test_contradictory_settings_are_refused_by_the_library(overlay, message):
    with pytest.raises(InputError, match=message):
        resolve(overlay)


def test_consistent_settings_pass():
    assert resolve({"tiles": {"size": 1024, "shift": 512}, "ingest": {"chunk": 66}})["tiles"]["shift"] == 512
    assert resolve({"tiles": {"shift": 0}})["tiles"]["shift"] == 0


def refused_at_parse_time(tmp_path, overlay: dict, *args: str) -> str:
    """Run a dry run that must fail before any job; return its output."""
    result = run_snakemake(tmp_path, "-n", *args, overlay=overlay, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Job stats" not in out and "rule " not in out, "refused before planning any job"
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("overlay", "message"), [*BAD_SETTINGS, ({"folds": {"n": 5}}, "cannot make folds.n = 5")])
def test_the_workflow_refuses_them_before_any_job(tmp_path, overlay, message):
    assert message in refused_at_parse_time(tmp_path, overlay)


@pytest.fixture
def layout(tmp_path):
    return write_kaggle_layout(tmp_path / "kaggle", [60000, 60001, 60002, 60003])


def test_dangling_slide_link_is_named(layout):
    (layout / "train" / "tr1.tiff").unlink()
    (layout / "train" / "tr1.tiff").symlink_to(layout / "elsewhere" / "tr1.tiff")
    with pytest.raises(InputError, match=r"train/tr1\.tiff.*dangling symbolic link.*elsewhere/tr1\.tiff"):
        KaggleDataset(layout).validate()


def test_slide_link_loop_is_named(layout):
    for name in ("te0.tiff", "te9.tiff"):
        (layout / "test" / name).unlink(missing_ok=True)
    (layout / "test" / "te0.tiff").symlink_to("te9.tiff")
    (layout / "test" / "te9.tiff").symlink_to("te0.tiff")
    with pytest.raises(InputError, match=r"test/te\d\.tiff.*symbolic link loop"):
        KaggleDataset(layout).validate()


def test_link_to_a_folder_is_named(layout):
    (layout / "train" / "tr2.tiff").unlink()
    (layout / "train" / "tr2.tiff").symlink_to(layout / "test")
    with pytest.raises(InputError, match=r"train/tr2\.tiff.*not a regular file"):
        KaggleDataset(layout).validate()


def test_dangling_polygon_link_is_named(layout):
    os.symlink(layout / "gone.json", layout / "train" / "tr0.json")
    with pytest.raises(InputError, match=r"train/tr0\.json.*dangling"):
        KaggleDataset(layout).validate()


def test_working_links_are_followed(layout):
    target = layout.parent / "store" / "tr3.tiff"
    target.parent.mkdir()
    (layout / "train" / "tr3.tiff").rename(target)
    (layout / "train" / "tr3.tiff").symlink_to(target)
    dataset = KaggleDataset(layout)
    dataset.validate()
    assert dataset.tiff_path("tr3") == layout / "train" / "tr3.tiff"


@pytest.mark.slow
def test_the_workflow_names_a_dangling_slide_link(tmp_path, layout):
    (layout / "test" / "te0.tiff").unlink()
    (layout / "test" / "te0.tiff").symlink_to("nowhere.tiff")
    out = refused_at_parse_time(tmp_path, {"data": {"root": str(layout)}})
    assert "test/te0.tiff" in out and "dangling symbolic link" in out
