"""Read a giant RGB slide TIFF top to bottom in bands of full-width rows.

The layout is detected first (DESIGN section 9), because the fast way to
read a band depends on it:

- *contiguous*: uncompressed pixels stored in one run of bytes (one strip,
  or strips back to back). A band is one ``readinto`` of its rows per
  channel plane; nothing else of the file is touched, and no memory map
  (whose pages would count as resident memory) is kept.
- *segments*: tiles of any compression, or strips that are compressed or
  scattered. Segments are decoded one row of segments at a time, every
  segment exactly once, in the caller's thread pool (the codecs release the
  GIL; the caller sizes it to its job's threads), and the decoded rows are
  kept until the bands that need them are served.

Memory holds a band and one row of segments, never the image; only a
compressed file stored as a single strip (which cannot be decoded in
parts) costs its whole decoded image.

The image is the largest level of any series (so SubIFD pyramids and
extra reduced pages are skipped). It must be 8-bit with three channels:
one page of RGB samples (contiguous ``(y, x, 3)`` or planar ``(3, y, x)``)
or three one-sample pages (``(3, y, x)`` or ``(1, 1, 3, y, x)`` series).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Generator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from tilepipe.errors import InputError

JPEG_COMPRESSIONS = {6, 7, 33007, 34892}


@dataclass(frozen=True)
class ChannelSource:
    """Where channels come from: one TIFF page with ``samples`` samples per pixel."""

    page: tifffile.TiffPage | tifffile.TiffFrame
    first_channel: int
    samples: int


class SlideTiff:
    """An RGB slide TIFF opened for band reads; use as a context manager.

    ``shape`` is the image's ``(height, width)`` in pixels; ``contiguous``
    tells whether bands are read by offset (see the module docstring).
    Starts no threads: :meth:`bands` decodes segments in the pool it is
    given, else in the calling thread. Raises :class:`InputError` naming
    the file if it is not a readable TIFF, is not 3-channel uint8, or has
    tiles or strips past its end.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.tif = tifffile.TiffFile(self.path)
        except FileNotFoundError:
            raise InputError(self.path, "TIFF file does not exist") from None
        except Exception as err:
            raise InputError(self.path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
        try:
            self.sources = self._find_channels()
            self._check_segments_inside_file()
        except BaseException:
            self.tif.close()
            raise
        page = self.sources[0].page.keyframe
        self.shape = (int(page.imagelength), int(page.imagewidth))
        self.contiguous = all(_is_plain_contiguous(s.page) for s in self.sources)

    def __enter__(self) -> SlideTiff:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.tif.close()

    @property
    def layout(self) -> str:
        """One line describing the layout.

        For example ``"tiled 512x512 jpeg, contig RGB, bigtiff; segment decoding"``.
        """
        page = self.sources[0].page.keyframe
        compression = tifffile.COMPRESSION(page.compression).name.lower()
        if page.is_tiled:
            segments = f"tiled {page.tilelength}x{page.tilewidth}"
        elif page.rowsperstrip >= page.imagelength:
            segments = "one strip"
        else:
            segments = f"strips of {page.rowsperstrip} rows"
        if len(self.sources) == 3:
            planes = "3 one-channel pages"
        else:
            planes = "planar RGB" if page.planarconfig == 2 else "contig RGB"
        reader = "contiguous reads" if self.contiguous else "segment decoding"
        return f"{segments} {compression}, {planes}, {'bigtiff' if self.tif.is_bigtiff else 'tiff'}; {reader}"

    def bands(self, rows: int, pool: Executor | None = None) -> Generator[np.ndarray, None, None]:
        """Yield the image top to bottom as ``(3, rows, width)`` uint8 bands.

        The last band has the remaining ``height % rows`` rows (if any).
        Each band is a new array the caller may keep. Segments are decoded
        in ``pool`` (the caller's, so that it decides how many threads a job
        runs), or with None in the calling thread; contiguous reads never
        use it.
        """
        height, _ = self.shape
        if self.contiguous:
            for y0 in range(0, height, rows):
                yield self._read_contiguous(y0, min(y0 + rows, height))
            return
        yield from _rebanded(self._segment_rows(pool), rows, height)

    def _find_channels(self) -> list[ChannelSource]:
        try:
            levels = [lvl for series in self.tif.series for lvl in series.levels if lvl.keyframe is not None]
        except Exception as err:
            raise InputError(self.path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
        if not levels:
            raise InputError(self.path, "not a readable TIFF (no image found: corrupt header?)")
        level = max(levels, key=lambda lvl: lvl.keyframe.imagelength * lvl.keyframe.imagewidth)
        pages = [p for p in level.pages if p is not None]
        key = level.keyframe
        samples = int(key.samplesperpixel)
        channels = samples * len(pages)
        if key.dtype != np.uint8 or channels != 3 or key.imagedepth != 1:
            raise InputError(
                self.path,
                f"expected an 8-bit RGB image (uint8 with 3 channels), found {key.dtype} with "
                f"{channels} channel{'s' if channels != 1 else ''}, shape {level.shape} (axes {level.axes})",
            )
        if key.is_subsampled and key.compression not in JPEG_COMPRESSIONS:
            raise InputError(self.path, "chroma-subsampled YCbCr outside JPEG is not supported")
        if len({_geometry(page.keyframe) for page in pages}) > 1:
            raise InputError(self.path, "the channel pages differ in size, tiling or compression")
        return [ChannelSource(page, i * samples, samples) for i, page in enumerate(pages)]

    def _check_segments_inside_file(self) -> None:
        size = self.tif.filehandle.size
        for source in self.sources:
            offsets = np.asarray(source.page.dataoffsets, dtype=np.int64)
            ends = offsets + np.asarray(source.page.databytecounts, dtype=np.int64)
            beyond = np.flatnonzero(ends > size)
            if beyond.size:
                i = int(beyond[0])
                raise InputError(
                    self.path,
                    f"truncated: {beyond.size} tiles/strips end past the end of the file "
                    f"(segment {i} ends at byte {int(ends[i])}, file has {size} bytes)",
                )

    def _read_contiguous(self, y0: int, y1: int) -> np.ndarray:
        _, width = self.shape
        band = np.empty((3, y1 - y0, width), dtype=np.uint8)
        fh = self.tif.filehandle
        for source in self.sources:
            page = source.page
            start = int(page.dataoffsets[0])
            if source.samples == 3 and page.keyframe.planarconfig == 1:
                pixels = np.empty((y1 - y0, width, 3), dtype=np.uint8)
                self._read_exact(fh, start + y0 * width * 3, pixels)
                band[:] = pixels.transpose(2, 0, 1)
                continue
            plane_bytes = self.shape[0] * width
            for s in range(source.samples):
                self._read_exact(fh, start + s * plane_bytes + y0 * width, band[source.first_channel + s])
        return band

    def _read_exact(self, fh: tifffile.FileHandle, offset: int, out: np.ndarray) -> None:
        with fh.lock:
            fh.seek(offset)
            got = fh.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise InputError(self.path, f"truncated: read {got} of {out.nbytes} bytes at offset {offset}")

    def _segment_rows(self, pool: Executor | None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(y0, rows)``: each row of segments decoded into ``(3, n, width)`` uint8."""
        height, width = self.shape
        key = self.sources[0].page.keyframe
        segment_height = key.tilelength if key.is_tiled else key.rowsperstrip
        columns = math.ceil(width / key.tilewidth) if key.is_tiled else 1
        segment_rows = math.ceil(height / segment_height)
        planes = key.samplesperpixel if key.planarconfig == 2 else 1
        for row in range(segment_rows):
            y0 = row * segment_height
            y1 = min(y0 + segment_height, height)
            out = np.empty((3, y1 - y0, width), dtype=np.uint8)
            indices = [
                (plane * segment_rows + row) * columns + col for plane in range(planes) for col in range(columns)
            ]
            jobs = [
                (source, data, index)
                for source in self.sources
                for data, index in self._read_segments(source.page, indices)
            ]
            decode = functools.partial(self._decode_into, out, y0)
            for _ in map(decode, jobs) if pool is None else pool.map(decode, jobs):
                pass
            yield y0, out

    def _read_segments(self, page, indices: list[int]) -> list[tuple[bytes | None, int]]:
        """Return ``(encoded bytes or None, index)`` of the page's segments ``indices``.

        The segments are read in file order, in as few reads as the file allows.
        """
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        fh = self.tif.filehandle
        return [
            item
            for chunk in fh.read_segments(offsets, counts, indices, sort=True, lock=fh.lock, flat=False)
            for item in chunk
        ]

    def _decode_into(self, out: np.ndarray, y0: int, job: tuple[ChannelSource, bytes | None, int]) -> None:
        """Decode ``job`` (source, encoded bytes, segment index) into ``out``: the ``(3, n, width)`` rows from y0."""
        source, data, index = job
        page, key = source.page, source.page.keyframe
        kwargs = {}
        if key.compression in JPEG_COMPRESSIONS:
            kwargs = {"jpegtables": page.jpegtables, "jpegheader": key.jpegheader}
        try:
            segment, (plane, _, y, x, _), shape = key.decode(data, index, **kwargs)
        except Exception as err:
            raise InputError(
                self.path, f"corrupt image data in tile/strip {index} ({type(err).__name__}: {err})"
            ) from err
        top = y - y0
        channel = source.first_channel + plane
        channels = slice(0, 3) if shape[3] == 3 else slice(channel, channel + 1)
        if segment is None:  # an empty (sparse) segment reads as zeros
            out[channels, top : top + shape[1], x : x + shape[2]] = 0
            return
        pixels = segment[0, : out.shape[1] - top, : out.shape[2] - x]
        h, w = pixels.shape[:2]
        out[channels, top : top + h, x : x + w] = pixels.transpose(2, 0, 1)


def _geometry(page: tifffile.TiffPage) -> tuple:
    """What must match between pages read as one image's channels."""
    return (
        page.imagelength,
        page.imagewidth,
        page.is_tiled,
        page.tilelength,
        page.tilewidth,
        page.rowsperstrip,
        page.planarconfig,
        page.compression,
    )


def _is_plain_contiguous(page) -> bool:
    """True if the page's pixels are raw bytes in one run that can be read by offset."""
    key = page.keyframe
    if key.compression != 1 or key.predictor != 1 or key.fillorder != 1 or key.is_tiled:
        return False
    if len(page.dataoffsets) == 1:
        return True
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    return bool(np.all(offsets[1:] == offsets[:-1] + counts[:-1]) and counts.sum() == key.nbytes)


def _rebanded(rows_iter: Iterator[tuple[int, np.ndarray]], rows: int, height: int) -> Iterator[np.ndarray]:
    """Regroup ``(y0, block)`` row blocks (in order, any heights) into bands of ``rows`` rows."""
    pending: list[np.ndarray] = []
    have = 0
    for _, block in rows_iter:
        pending.append(block)
        have += block.shape[1]
        while have >= rows:
            joined = pending[0] if len(pending) == 1 else np.concatenate(pending, axis=1)
            yield joined[:, :rows]
            rest = joined[:, rows:]
            pending = [rest] if rest.shape[1] else []
            have = rest.shape[1]
    if have:
        yield np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
