"""Pseudo-labels: the thresholded prediction as a label store, written with at most the job's threads."""

import numpy as np
import pytest
import zarr

from tests.builders import write_slide_store
from tests.data.test_ingest import threads_started_by_tilepipe
from tilepipe.inference.pseudo import write_pseudo_labels
from tilepipe.stores.ngff import max_2x2
from tilepipe.stores.probability import foreground_cutoff, write_probability
from tilepipe.stores.slide import SlideStore

HEIGHT, WIDTH, CHUNK = 200, 330, 64


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(4)
    slide, prediction = tmp_path / "s.zarr", tmp_path / "p.zarr"
    write_slide_store(slide, rng.integers(0, 255, (3, HEIGHT, WIDTH), dtype=np.uint8), chunk=CHUNK, min_level_size=80)
    probability = np.zeros((HEIGHT, WIDTH), np.uint8)
    probability[20:120, 40:300] = rng.integers(0, 256, (100, 260), dtype=np.uint8)
    write_probability(prediction, probability, chunk=CHUNK)
    return slide, prediction, probability


@pytest.mark.parametrize("threads", [1, 2])
def test_pseudo_labels_are_the_thresholded_prediction_written_with_at_most_its_threads(
    tmp_path, monkeypatch, stores, threads
):
    slide, prediction, probability = stores
    with threads_started_by_tilepipe(monkeypatch) as record:
        pixels = write_pseudo_labels(slide, prediction, tmp_path / "pseudo.zarr", 0.5, threads=threads)
    assert record.peak <= threads, f"{record.peak} threads at once with threads={threads}"
    assert record.peak == threads, "a thread the job may use is left idle"
    assert record.alive == 0, "threads left running after the pseudo-labels were written"
    expected = (probability >= foreground_cutoff(0.5)).astype(np.uint8)
    assert pixels == int(expected.sum()) > 0
    labels = SlideStore(slide, labels_path=tmp_path / "pseudo.zarr")
    np.testing.assert_array_equal(labels.labels[:], expected)
    group = zarr.open_group(tmp_path / "pseudo.zarr", mode="r")
    label_shapes = [group[str(level)].shape for level in range(len(labels.levels))]
    assert label_shapes == labels.level_shapes


def test_threads_must_be_given(tmp_path, stores):
    slide, prediction, _ = stores
    with pytest.raises(TypeError, match="threads"):
        write_pseudo_labels(slide, prediction, tmp_path / "pseudo.zarr", 0.5)
    with pytest.raises(ValueError, match="threads"):
        write_pseudo_labels(slide, prediction, tmp_path / "pseudo.zarr", 0.5, threads=0)
    assert not (tmp_path / "pseudo.zarr").exists()


def test_pyramid_of_pseudo_labels_keeps_small_objects(tmp_path, stores):
    slide, prediction, _ = stores
    probability = np.zeros((HEIGHT, WIDTH), np.uint8)
    probability[101, 201] = 255
    write_probability(tmp_path / "dot.zarr", probability, chunk=CHUNK)
    write_pseudo_labels(slide, tmp_path / "dot.zarr", tmp_path / "pseudo.zarr", 0.5, threads=1)
    level1 = zarr.open_group(tmp_path / "pseudo.zarr", mode="r")["1"][:]
    np.testing.assert_array_equal(level1, max_2x2((probability >= 128).astype(np.uint8)))
