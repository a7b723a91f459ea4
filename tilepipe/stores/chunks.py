"""The chunk files of slide stores: their codec, and direct reads of them.

:class:`tilepipe.stores.ngff.PyramidWriter` writes every chunk of a slide store as
one file, encoded with :data:`CHUNK_ENCODER` (the settings of the :data:`CODEC`
the arrays declare).

zarr 3 spends most of a small window read in its asynchronous machinery
(event loop, executor, codec pipeline), not in decoding: about 2 of 2.5 CPU-ms
for a training tile (docs/benchmarks.md, "Training loader"). For arrays in
exactly the format the writer produces (a local store, regular chunk grid,
default chunk keys, uint8, fill value 0, ``bytes`` + :data:`CODEC`)
:class:`ChunkFiles` reads and decodes the chunk files itself, keeping
recently decoded chunks in a small per-process cache, since neighbouring
windows (inference, the shifted grid) share chunks. Every other array is
read through zarr (:func:`fast_view` returns it unchanged).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.storage import LocalStore

from tilepipe.errors import InputError

# Blosc LZ4 with bit shuffle: on slide pixels it encodes 3.3x and decodes
# 1.6x faster than zstd level 1, for 7 % larger chunks (1.63x vs 1.75x
# compression; benchmarks/bench_ingest.py --codecs). CODEC is what the
# arrays declare, CHUNK_ENCODER the same settings as the numcodecs codec
# zarr runs for it.
CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1)
CHUNK_ENCODER = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
# Decoded chunks kept per process: 85 image chunks of 3 x 512 x 512.
CACHE_BYTES = 64 * 2**20


class _ChunkCache:
    """Decoded chunks by (file, size, mtime), least recently used dropped first past ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self.lock:
            chunk = self.entries.get(key)
            if chunk is not None:
                self.entries.move_to_end(key)
            return chunk

    def put(self, key: tuple, chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes:
            return
        with self.lock:
            if key in self.entries:
                return
            self.entries[key] = chunk
            self.bytes += chunk.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self.entries.popitem(last=False)
                self.bytes -= dropped.nbytes


CACHE = _ChunkCache(CACHE_BYTES)


def is_writer_format(array: zarr.Array) -> bool:
    """Whether ``array`` is stored as :class:`tilepipe.stores.ngff.PyramidWriter` writes it (see the module docstring)."""
    metadata = array.metadata
    return (
        isinstance(array.store, LocalStore)
        and getattr(metadata, "zarr_format", None) == 3
        and isinstance(metadata.chunk_grid, RegularChunkGrid)
        and isinstance(metadata.chunk_key_encoding, DefaultChunkKeyEncoding)
        and array.dtype == np.uint8
        and metadata.fill_value == 0
        and len(metadata.codecs) == 2
        and isinstance(metadata.codecs[0], BytesCodec)
        and metadata.codecs[1] == CODEC
    )


class ChunkFiles:
    """A read-only ``(..., y, x)`` uint8 array view of a writer-format zarr array.

    Supports ``shape``, ``dtype``, ``ndim`` and ``view[..., y0:y1, x0:x1]``
    (slices with step 1 inside the array), which returns a new array equal to
    zarr's ``array[..., y0:y1, x0:x1]``: missing chunk files read as 0.
    """

    def __init__(self, array: zarr.Array):
        if not is_writer_format(array):
            raise ValueError(f"array {array.path!r} is not in the format tilepipe.stores.ngff.PyramidWriter writes")
        self.root = Path(array.store.root, array.path)
        self.shape = tuple(int(n) for n in array.shape)
        self.chunks = tuple(int(n) for n in array.chunks)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.uint8)
        self._encode_key = array.metadata.encode_chunk_key
        if any(n != c for n, c in zip(self.shape[:-2], self.chunks[:-2], strict=False)):
            raise ValueError(f"array {array.path!r}: leading axes must be one chunk, got chunks {self.chunks}")

    def __getitem__(self, index) -> np.ndarray:
        if not (isinstance(index, tuple) and len(index) == 3 and index[0] is Ellipsis):
            raise TypeError("ChunkFiles supports view[..., y0:y1, x0:x1] only")
        (y0, y1), (x0, x1) = (self._bounds(s, n) for s, n in zip(index[1:], self.shape[-2:], strict=False))
        out = np.zeros((*self.shape[:-2], y1 - y0, x1 - x0), dtype=np.uint8)
        ch, cw = self.chunks[-2:]
        for row in range(y0 // ch, -(-y1 // ch)):
            for col in range(x0 // cw, -(-x1 // cw)):
                chunk = self._chunk(row, col)
                if chunk is None:
                    continue
                top, left = row * ch, col * cw
                sy0, sy1 = max(y0, top), min(y1, top + ch)
                sx0, sx1 = max(x0, left), min(x1, left + cw)
                out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = chunk[
                    ..., sy0 - top : sy1 - top, sx0 - left : sx1 - left
                ]
        return out

    @staticmethod
    def _bounds(index, size: int) -> tuple[int, int]:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("ChunkFiles supports slices with step 1 only")
        start, stop = 0 if index.start is None else index.start, size if index.stop is None else index.stop
        if not 0 <= start <= stop <= size:
            raise IndexError(f"slice {start}:{stop} outside 0:{size}")
        return start, stop

    def _chunk(self, row: int, col: int) -> np.ndarray | None:
        """The decoded chunk at grid ``(row, col)`` (read-only, full chunk shape), or None if it is not stored.

        Raises InputError naming the file if it does not decode to a chunk.
        """
        path = os.path.join(self.root, self._encode_key((0,) * (self.ndim - 2) + (row, col)))
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        chunk = CACHE.get(key)
        if chunk is None:
            with open(path, "rb") as file:
                data = file.read()
            try:
                chunk = np.frombuffer(CHUNK_ENCODER.decode(data), dtype=np.uint8).reshape(self.chunks)
            except (RuntimeError, ValueError) as err:
                raise InputError(path, f"corrupt chunk: not a Blosc-encoded {self.chunks} uint8 block ({err})") from err
            CACHE.put(key, chunk)
        return chunk


def fast_view(array: zarr.Array):
    """Return a :class:`ChunkFiles` view of ``array`` if it is in the writer's format, else ``array`` itself."""
    return ChunkFiles(array) if is_writer_format(array) else array
