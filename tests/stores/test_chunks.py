"""Direct chunk-file reads (tilepipe.stores.chunks) against zarr's own reads of the same arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import write_slide_store
from tilepipe.errors import InputError
from tilepipe.stores import chunks
from tilepipe.stores.chunks import ChunkFiles, fast_view, is_writer_format
from tilepipe.stores.slide import SlideStore

HEIGHT, WIDTH, CHUNK = 203, 150, 32


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8)
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[40:90, 100:149] = 1  # a few chunks only: the rest are not stored
    labels[202, 0] = 1  # the last row's border chunk
    path = tmp_path_factory.mktemp("chunks") / "s.zarr"
    write_slide_store(path, image, labels, chunk=CHUNK, min_level_size=60)
    return path


@pytest.fixture(scope="module")
def arrays(store_path):
    group = zarr.open_group(store_path, mode="r")
    return [group["0"], group["1"], group["2"], group["labels/glomeruli/0"]]


def test_the_writers_arrays_are_read_directly_and_some_label_chunks_are_absent(arrays, store_path):
    assert all(is_writer_format(a) for a in arrays)
    assert all(isinstance(fast_view(a), ChunkFiles) for a in arrays)
    stored = sum(len(files) for _, _, files in os.walk(store_path / "labels/glomeruli/0/c"))
    assert 0 < stored < np.prod([-(-n // CHUNK) for n in (HEIGHT, WIDTH)]), "empty mask chunks are not stored"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_window_equals_zarrs(arrays, data):
    array = data.draw(st.sampled_from(arrays))
    h, w = array.shape[-2:]
    y0 = data.draw(st.integers(0, h))
    y1 = data.draw(st.integers(y0, h))
    x0 = data.draw(st.integers(0, w))
    x1 = data.draw(st.integers(x0, w))
    got = ChunkFiles(array)[..., y0:y1, x0:x1]
    np.testing.assert_array_equal(got, array[..., y0:y1, x0:x1])
    assert got.flags.writeable and got.flags.c_contiguous


def test_slide_store_reads_equal_zarr_past_the_borders(store_path, arrays):
    store = SlideStore(store_path)
    window = store.read_image(190, 140, 40, 40)
    expected = np.zeros((3, 40, 40), np.uint8)
    expected[:, :13, :10] = arrays[0][:, 190:, 140:]
    np.testing.assert_array_equal(window, expected)
    mask = store.read_labels(-5, 95, 64, 64)
    expected = np.zeros((64, 64), np.uint8)
    expected[5:, :55] = arrays[3][:59, 95:]
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() > 0


def test_a_rewritten_chunk_is_read_again(tmp_path):
    image = np.full((3, 64, 64), 7, np.uint8)
    write_slide_store(tmp_path / "a.zarr", image, None, chunk=32, min_level_size=64)
    array = zarr.open_group(tmp_path / "a.zarr", mode="r")["0"]
    view = ChunkFiles(array)
    assert (view[..., 0:64, 0:64] == 7).all()  # now cached
    # Same store path, new content (a test or a rerun rewriting an artifact in place).
    write_slide_store(tmp_path / "b.zarr", np.full((3, 64, 64), 9, np.uint8), None, chunk=32, min_level_size=64)
    for row in (0, 1):
        for col in (0, 1):
            os.replace(tmp_path / f"b.zarr/0/c/0/{row}/{col}", tmp_path / f"a.zarr/0/c/0/{row}/{col}")
    assert (view[..., 0:64, 0:64] == 9).all()


def test_other_arrays_are_left_to_zarr(tmp_path):
    zstd = zarr.create_array(
        tmp_path / "z.zarr", shape=(50, 60), chunks=(16, 16), dtype="uint8", compressors=zarr.codecs.ZstdCodec(level=1)
    )
    zstd[:] = 5
    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(50, 60), chunks=(16, 16), dtype="uint8", compressors=chunks.CODEC
    )
    wide = zarr.create_array(
        tmp_path / "f.zarr", shape=(50, 60), chunks=(16, 16), dtype="uint16", compressors=chunks.CODEC
    )
    for array in (zstd, in_memory, wide):
        assert not is_writer_format(array) and fast_view(array) is array
        with pytest.raises(ValueError, match="not in the format"):
            ChunkFiles(array)


def test_the_cache_keeps_within_its_budget():
    cache = chunks._ChunkCache(max_bytes=1000)
    for i in range(10):
        cache.put(("f", i), np.zeros(300, np.uint8))
    assert cache.bytes <= 1000 and list(cache.entries) == [("f", 7), ("f", 8), ("f", 9)]
    assert cache.get(("f", 7)) is not None and cache.get(("f", 0)) is None
    cache.put(("big",), np.zeros(2000, np.uint8))
    assert ("big",) not in cache.entries


@pytest.mark.parametrize(
    "index",
    [(slice(0, 5), slice(0, 5)), (Ellipsis, slice(0, 5, 2), slice(0, 5)), (Ellipsis, slice(0, 500), slice(0, 5))],
)
def test_unsupported_indexing_is_refused(arrays, index):
    with pytest.raises((TypeError, IndexError)):
        ChunkFiles(arrays[3])[index]


@pytest.mark.parametrize("content", [b"not blosc", None])
def test_a_corrupt_chunk_names_its_file(tmp_path, content):
    write_slide_store(tmp_path / "a.zarr", np.full((3, 64, 64), 7, np.uint8), None, chunk=32, min_level_size=64)
    path = tmp_path / "a.zarr/0/c/0/1/0"
    if content is None:  # a valid Blosc frame of the wrong size
        content = chunks.CHUNK_ENCODER.encode(np.zeros(100, np.uint8))
    path.write_bytes(content)
    store = SlideStore(tmp_path / "a.zarr")
    with pytest.raises(InputError, match=r"a\.zarr/0/c/0/1/0: corrupt chunk"):
        store.read_image(0, 0, 64, 64)
