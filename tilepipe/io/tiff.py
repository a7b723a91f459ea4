"""Read a giant RGB slide TIFF top to bottom in bands of full-width rows.

The layout is detected first (DESIGN section 9), because the fast way to
read a band depends on it:

- *contiguous*: uncompressed pixels stored in one run of bytes (one strip,
  or strips back to back). A band is one ``readinto`` of its rows per
  channel plane; nothing else of the file is touched, and no memory map
  (whose pages would count as resident memory) is kept.
- *segments*: tiles of any compression, or strips that are compressed or
  scattered, a row of them decoding to at most ``SEGMENT_BUDGET`` bytes.
  Segments are decoded one row of segments at a time, every segment
  exactly once, in the caller's thread pool (the codecs release the GIL;
  the caller sizes it to its job's threads), and the decoded rows are kept
  until the bands that need them are served.
- *streamed strips*: strips that decode to more than ``SEGMENT_BUDGET``
  (a single-strip slide, say) in a codec that can be decoded in parts:
  uncompressed (read by offset) or deflate (inflated incrementally by
  ``zlib.decompressobj``), with or without the horizontal predictor
  (undone row by row). Each channel plane is read in file order, one band
  at a time.

Larger strips in any other codec (LZW, JPEG, JPEG 2000, ...) are refused
before anything is allocated, with an :class:`InputError` that says how to
re-save the slide tiled: they decode only as a whole (imagecodecs has no
incremental LZW decoder, and one in Python would take minutes per slide).
So are rows of tiles over the budget, deflate strips whose tags promise
more pixels than their data can expand to, and bands over
``BAND_BUDGET`` (an image too wide, or size tags that lie). Memory thus
holds a few bands and at most one row of segments of ``SEGMENT_BUDGET``
bytes, never the image, whatever the layout.

The image is the largest level of any series (so SubIFD pyramids and
extra reduced pages are skipped). It must be 8-bit with three channels:
one page of RGB samples (contiguous ``(y, x, 3)`` or planar ``(3, y, x)``)
or three one-sample pages (``(3, y, x)`` or ``(1, 1, 3, y, x)`` series).
One page of RGB plus a fourth sample is read too: an alpha sample
(ExtraSamples associated or unassociated) is composited over white, band by
band, as a slide's background is (opaque pixels keep their RGB exactly); an
unspecified fourth sample is dropped. Anything else is refused naming what
was found: one channel (greyscale or fluorescence: the models segment
brightfield RGB, and replicating a grey channel would only hide that),
more channels (multiplexed or CMYK), and samples other than uint8.
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from tilepipe.errors import InputError

JPEG_COMPRESSIONS = {6, 7, 33007, 34892}
DEFLATE_COMPRESSIONS = {8, 32946}  # Adobe deflate and the old deflate code: both zlib streams
STREAMABLE_COMPRESSIONS = {1, *DEFLATE_COMPRESSIONS}
SEGMENT_BUDGET = 256 * 2**20
"""Most bytes one strip, or one row of tiles, may decode to in one go; larger strips are streamed or refused."""
BAND_BUDGET = 256 * 2**20
"""Most bytes one ``(channels, rows, width)`` band may take (174,762 px wide at 512 rows); a wider image is refused.

Ingest holds about six bands: slides up to ~65,000 px wide stay under 1 GB
at 512 rows, wider real slides take proportionally more (or a smaller
``ingest.chunk``); the budget only stops size tags that lie."""
DEFLATE_MAX_RATIO = 1032
"""The most a deflate stream can expand (decoded bytes per stored byte), whatever the encoder."""
READ_BYTES = 4 * 2**20
"""Stored bytes of a streamed deflate strip read from the file at a time."""
INFLATE_BYTES = 16 * 2**20
"""Decoded bytes a streamed deflate strip is inflated in at a time."""
RESAVE = (
    "re-save the slide tiled, e.g. `vips tiffsave in.tif out.tif --tile --tile-width 512 --tile-height 512 "
    "--compression deflate --bigtiff` or `bfconvert -tilex 512 -tiley 512 -compression zlib in.tif out.tif`"
)


@dataclass(frozen=True)
class ChannelSource:
    """Where channels come from: one TIFF page with ``samples`` samples per pixel."""

    page: tifffile.TiffPage | tifffile.TiffFrame
    first_channel: int
    samples: int


class SlideTiff:
    """An RGB slide TIFF opened for band reads; use as a context manager.

    ``shape`` is the image's ``(height, width)`` in pixels; ``contiguous``
    tells whether bands are read by offset, ``streamed`` whether strips are
    decoded in parts (see the module docstring). Starts no threads:
    :meth:`bands` decodes in the pool it is given, else in the calling
    thread. Raises :class:`InputError` naming the file, before any pixel is
    allocated, if it is not a readable TIFF, is not 8-bit RGB (or RGBA), lists
    fewer tiles or strips than its size needs, has tiles or strips past its
    end, or has strips or rows of tiles that cannot be decoded within
    ``SEGMENT_BUDGET`` bytes (the message says how to re-save it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.tif = tifffile.TiffFile(self.path)
        except FileNotFoundError:
            raise InputError(self.path, "TIFF file does not exist") from None
        except Exception as err:
            raise InputError(self.path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
        self.tif.filehandle.set_lock(True)  # tifffile's default lock is a no-op; pool threads seek and read
        try:
            self.sources = self._find_channels()
            self._check_segments_inside_file()
            page = self.sources[0].page.keyframe
            self.shape = (int(page.imagelength), int(page.imagewidth))
            self.contiguous = all(_is_plain_contiguous(s.page) for s in self.sources)
            self.streamed = not self.contiguous and self._must_stream()
        except BaseException:
            self.tif.close()
            raise

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
            samples = {None: "RGB", "associated": "RGBA", "unassociated": "RGBA"}[self.alpha]
            samples += "" if self.channels == 3 or self.alpha else "+1"
            planes = f"{'planar' if page.planarconfig == 2 else 'contig'} {samples}"
        reader = "contiguous reads" if self.contiguous else "streamed strips" if self.streamed else "segment decoding"
        return f"{segments} {compression}, {planes}, {'bigtiff' if self.tif.is_bigtiff else 'tiff'}; {reader}"

    def bands(self, rows: int, pool: Executor | None = None) -> Generator[np.ndarray, None, None]:
        """Yield the image top to bottom as ``(3, rows, width)`` uint8 RGB bands.

        The last band has the remaining ``height % rows`` rows (if any); an
        alpha sample is composited over white (see the module docstring).
        Each band is a new array the caller may keep. Segments (and the
        channel planes of streamed strips) are decoded in ``pool`` (the
        caller's, so that it decides how many threads a job runs), or with
        None in the calling thread; contiguous reads never use it. Raises
        :class:`InputError`, before the first band is allocated, if a band
        would take more than ``BAND_BUDGET`` bytes.
        """
        height, width = self.shape
        band_bytes = self.channels * min(rows, height) * width
        if band_bytes > BAND_BUDGET:
            raise InputError(
                self.path,
                f"a band of {min(rows, height)} rows decodes to {min(rows, height)} x {width} x {self.channels} = "
                f"{_size(band_bytes)}, more than the {_size(BAND_BUDGET)} a band may take: the image "
                f"({height} x {width} pixels) is too wide, or its size tags are wrong (a smaller ingest.chunk gives smaller bands)",
            )
        if self.contiguous:
            raw = (self._read_contiguous(y0, min(y0 + rows, height)) for y0 in range(0, height, rows))
        elif self.streamed:
            raw = self._streamed_bands(rows, pool)
        else:
            raw = _rebanded(self._segment_rows(pool), rows)
        if self.channels == 3:
            yield from raw
            return
        try:
            for band in raw:
                yield _over_white(band, self.alpha)
        finally:
            raw.close()

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
        rgb_plus_one = len(pages) == 1 and samples == 4 and key.photometric == tifffile.PHOTOMETRIC.RGB
        if key.dtype != np.uint8 or not (channels == 3 or rgb_plus_one) or key.imagedepth != 1:
            found = (
                f"found {key.dtype} with {channels} channel{'s' if channels != 1 else ''}, "
                f"shape {level.shape} (axes {level.axes})"
            )
            raise InputError(
                self.path,
                f"expected an 8-bit RGB image (uint8 with 3 channels, or RGBA), {found}: {_why_not(key, channels)}",
            )
        self.channels = channels
        extra = tuple(int(e) for e in key.extrasamples)
        self.alpha = {1: "associated", 2: "unassociated"}.get(extra[0]) if rgb_plus_one and extra else None
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

    def _check_segment_count(self) -> None:
        """Refuse pages that list fewer tiles or strips than the image's size and segment shape need."""
        height, width = self.shape
        key = self.sources[0].page.keyframe
        if key.is_tiled:
            per_plane = math.ceil(height / key.tilelength) * math.ceil(width / key.tilewidth)
        else:
            per_plane = math.ceil(height / min(key.rowsperstrip, height))
        needed = per_plane * (key.samplesperpixel if key.planarconfig == 2 else 1)
        for source in self.sources:
            listed = len(source.page.dataoffsets)
            if listed < needed:
                raise InputError(
                    self.path,
                    f"the tags describe a {height} x {width} image in {needed} tiles/strips but list only "
                    f"{listed}: corrupt header, or size tags that are wrong",
                )

    def _must_stream(self) -> bool:
        """Return True if the strips are to be streamed, False if rows of segments are decoded whole.

        Raises :class:`InputError` if a row of segments decodes to more than
        ``SEGMENT_BUDGET`` bytes and cannot be streamed (tiles, a codec other
        than uncompressed or deflate, a predictor other than horizontal),
        or if streamed strips hold too little data for their rows.
        """
        self._check_segment_count()
        height, width = self.shape
        key = self.sources[0].page.keyframe
        rows = min(key.tilelength if key.is_tiled else key.rowsperstrip, height)
        nbytes = rows * width * self.channels
        if nbytes <= SEGMENT_BUDGET:
            return False
        decodes = f"decodes to {rows} x {width} x {self.channels} = {_size(nbytes)}"
        budget = f"more than the {_size(SEGMENT_BUDGET)} a slide may decode at once"
        if key.is_tiled:
            raise InputError(
                self.path, f"one row of {key.tilelength} x {key.tilewidth} tiles {decodes}, {budget}; {RESAVE}"
            )
        where = "one strip" if len(self.sources) == 1 and key.planarconfig == 1 else "one strip per channel"
        if key.compression not in STREAMABLE_COMPRESSIONS or key.fillorder != 1:
            codec = _compression_name(key.compression) + (" bit-reversed" if key.fillorder != 1 else "")
            raise InputError(
                self.path, f"{decodes} in {where}, {budget}, and {codec} strips decode only as a whole; {RESAVE}"
            )
        if key.predictor not in (1, 2):
            predictor = _predictor_name(key.predictor)
            raise InputError(
                self.path,
                f"{decodes} in {where}, {budget}, and its {predictor} predictor is not supported in strips "
                f"decoded in parts; {RESAVE}",
            )
        self._check_streamed_strips()
        return True

    def _strip_rows(self) -> list[int]:
        """Return the rows of each strip of one channel plane, top to bottom."""
        height, _ = self.shape
        per_strip = min(self.sources[0].page.keyframe.rowsperstrip, height)
        return [min(per_strip, height - y0) for y0 in range(0, height, per_strip)]

    def _check_streamed_strips(self) -> None:
        """Refuse strips whose stored bytes cannot hold the rows their tags promise.

        Uncompressed strips must store every byte of their rows, deflate
        strips at least ``1 / DEFLATE_MAX_RATIO`` of them; empty strips
        (offset or byte count 0) read as zeros.
        """
        _, width = self.shape
        key = self.sources[0].page.keyframe
        rows = self._strip_rows()
        for source in self.sources:
            samples = source.samples if key.planarconfig == 1 else 1
            strip_rows = np.tile(np.asarray(rows, dtype=np.int64), source.samples // samples)
            needed = strip_rows * width * samples
            offsets = np.asarray(source.page.dataoffsets[: needed.size], dtype=np.int64)
            stored = np.asarray(source.page.databytecounts[: needed.size], dtype=np.int64)
            limit = stored if key.compression == 1 else stored * DEFLATE_MAX_RATIO
            short = np.flatnonzero((offsets > 0) & (stored > 0) & (needed > limit))
            if not short.size:
                continue
            i = int(short[0])
            decodes = f"decodes to {strip_rows[i]} x {width} x {samples} = {_size(int(needed[i]))}"
            if key.compression == 1:
                raise InputError(self.path, f"truncated: strip {i} {decodes} but stores only {stored[i]} bytes")
            raise InputError(
                self.path,
                f"strip {i} {decodes} from {_size(int(stored[i]))} of deflate data, more than deflate can expand "
                f"({DEFLATE_MAX_RATIO} times at most): its size tags are wrong or the strip is truncated",
            )

    def _streamed_bands(self, rows: int, pool: Executor | None) -> Iterator[np.ndarray]:
        """Yield ``(channels, rows, width)`` uint8 bands read plane by plane from streamed strips."""
        height, width = self.shape
        key = self.sources[0].page.keyframe
        strip_rows = self._strip_rows()
        planes = []
        for source in self.sources:
            samples = source.samples if key.planarconfig == 1 else 1
            for plane in range(source.samples // samples):
                first = plane * len(strip_rows)
                planes.append(
                    _StripReader(
                        self,
                        source.page,
                        range(first, first + len(strip_rows)),
                        [n * width * samples for n in strip_rows],
                        source.first_channel + plane,
                        samples,
                    )
                )
        for y0 in range(0, height, rows):
            band = np.empty((self.channels, min(rows, height - y0), width), dtype=np.uint8)
            fill = functools.partial(_fill_band, band, key.predictor == 2)
            for _ in map(fill, planes) if pool is None or len(planes) == 1 else pool.map(fill, planes):
                pass
            yield band

    def _read_at(self, offset: int, size: int) -> bytes:
        """Return the ``size`` bytes of the file at ``offset``."""
        fh = self.tif.filehandle
        with fh.lock:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise InputError(self.path, f"truncated: read {len(data)} of {size} bytes at offset {offset}")
        return data

    def _read_contiguous(self, y0: int, y1: int) -> np.ndarray:
        _, width = self.shape
        band = np.empty((self.channels, y1 - y0, width), dtype=np.uint8)
        fh = self.tif.filehandle
        for source in self.sources:
            page = source.page
            start = int(page.dataoffsets[0])
            if source.samples > 1 and page.keyframe.planarconfig == 1:
                pixels = np.empty((y1 - y0, width, source.samples), dtype=np.uint8)
                self._read_exact(fh, start + y0 * width * source.samples, pixels)
                band[:] = pixels.transpose(2, 0, 1)
                continue
            plane_bytes = self.shape[0] * width
            for s in range(source.samples):
                self._read_exact(fh, start + s * plane_bytes + y0 * width, band[source.first_channel + s])
        return band

    def _read_exact(self, fh: tifffile.FileHandle, offset: int, out: np.ndarray | memoryview) -> None:
        with fh.lock:
            fh.seek(offset)
            got = fh.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise InputError(self.path, f"truncated: read {got} of {out.nbytes} bytes at offset {offset}")

    def _segment_rows(self, pool: Executor | None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(y0, rows)``: each row of segments decoded into ``(channels, n, width)`` uint8."""
        height, width = self.shape
        key = self.sources[0].page.keyframe
        segment_height = key.tilelength if key.is_tiled else key.rowsperstrip
        columns = math.ceil(width / key.tilewidth) if key.is_tiled else 1
        segment_rows = math.ceil(height / segment_height)
        planes = key.samplesperpixel if key.planarconfig == 2 else 1
        for row in range(segment_rows):
            y0 = row * segment_height
            y1 = min(y0 + segment_height, height)
            out = np.empty((self.channels, y1 - y0, width), dtype=np.uint8)
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
            del out, jobs, decode  # before the next row is allocated

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
        """Decode ``job`` (source, encoded bytes, segment index) into ``out``: the ``(channels, n, width)`` rows from y0."""
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
        channels = slice(0, shape[3]) if shape[3] > 1 else slice(channel, channel + 1)
        if segment is None:  # an empty (sparse) segment reads as zeros
            out[channels, top : top + shape[1], x : x + shape[2]] = 0
            return
        pixels = segment[0, : out.shape[1] - top, : out.shape[2] - x]
        h, w = pixels.shape[:2]
        out[channels, top : top + h, x : x + w] = pixels.transpose(2, 0, 1)


class _StripReader:
    """The decoded bytes of one channel plane's strips, read in order into the caller's arrays.

    ``indices`` are the plane's strips top to bottom, ``sizes`` their decoded
    bytes; the plane fills band channel ``channel`` (and the next ones) with
    ``samples`` samples per pixel (3 or 4 for contiguous RGB(A), else 1).
    Uncompressed strips are read by offset; deflate strips are inflated
    incrementally (``zlib.decompressobj`` with a ``max_length``), so memory
    holds the caller's array plus ``READ_BYTES`` stored and
    ``INFLATE_BYTES`` decoded bytes, whatever the strip's size.
    """

    def __init__(
        self,
        slide: SlideTiff,
        page: tifffile.TiffPage | tifffile.TiffFrame,
        indices: Iterable[int],
        sizes: Iterable[int],
        channel: int,
        samples: int,
    ):
        self.slide, self.page = slide, page
        self.channel, self.samples = channel, samples
        self._strips = iter(zip(indices, sizes, strict=True))
        self._deflate = page.keyframe.compression in DEFLATE_COMPRESSIONS
        self._index = -1
        self._left = 0  # decoded bytes of the current strip not read yet
        self._offset = self._stored = 0  # where its next stored bytes start, how many are left
        self._empty = False
        self._inflater = zlib.decompressobj()
        self._tail = b""  # stored bytes read but not inflated yet

    def readinto(self, out: np.ndarray) -> None:
        """Fill the C-contiguous uint8 array ``out`` with the next decoded bytes, strip after strip."""
        flat = out.reshape(-1)
        view = memoryview(flat)
        pos = 0
        while pos < flat.size:
            if not self._left:
                self._next_strip()
            n = min(self._left, flat.size - pos)
            if self._empty:
                flat[pos : pos + n] = 0
            elif self._deflate:
                self._inflate_into(view[pos : pos + n])
            else:
                self.slide._read_exact(self.slide.tif.filehandle, self._offset, view[pos : pos + n])
                self._offset += n
            self._left -= n
            pos += n

    def _next_strip(self) -> None:
        self._index, self._left = next(self._strips)
        self._offset = int(self.page.dataoffsets[self._index])
        self._stored = int(self.page.databytecounts[self._index])
        self._empty = not (self._offset and self._stored)  # an empty (sparse) strip reads as zeros
        self._inflater = zlib.decompressobj()
        self._tail = b""

    def _inflate_into(self, out: memoryview) -> None:
        """Fill ``out`` with the next inflated bytes of the current strip."""
        got = 0
        while got < len(out):
            if not self._tail and self._stored and not self._inflater.eof:
                size = min(READ_BYTES, self._stored)
                self._tail = self.slide._read_at(self._offset, size)
                self._offset += size
                self._stored -= size
            try:
                data = self._inflater.decompress(self._tail, min(len(out) - got, INFLATE_BYTES))
            except zlib.error as err:
                raise InputError(
                    self.slide.path, f"corrupt image data in tile/strip {self._index} ({type(err).__name__}: {err})"
                ) from err
            self._tail = self._inflater.unconsumed_tail
            if not data and not self._tail and (self._inflater.eof or not self._stored):
                raise InputError(
                    self.slide.path,
                    f"corrupt image data in tile/strip {self._index} (its deflate data ends "
                    f"{self._left - got} decoded bytes short of its rows)",
                )
            out[got : got + len(data)] = data
            got += len(data)


def _fill_band(band: np.ndarray, horizontal_predictor: bool, plane: _StripReader) -> None:
    """Read the next ``band.shape[1]`` rows of ``plane`` into their channels of the ``(channels, rows, width)`` band."""
    if plane.samples == 1:
        pixels = band[plane.channel]
        plane.readinto(pixels)
    else:
        pixels = np.empty((*band.shape[1:], plane.samples), dtype=np.uint8)
        plane.readinto(pixels)
    if horizontal_predictor:  # each row stores differences to the pixel on its left, per sample
        imagecodecs.delta_decode(pixels, axis=1, out=pixels)
    if plane.samples != 1:
        band[plane.channel : plane.channel + plane.samples] = pixels.transpose(2, 0, 1)


def _why_not(key: tifffile.TiffPage, channels: int) -> str:
    """Say, for an image that is not 8-bit RGB(A), why it cannot be read and what to do."""
    if key.imagedepth != 1:
        return "a 3D (volume) image; save the slide's plane as a 2D RGB TIFF"
    if channels == 1:
        return (
            "a single-channel (greyscale or fluorescence) image; the models segment brightfield RGB slides "
            "(PAS-stained kidney), so a grey channel is not copied into three"
        )
    if key.dtype != np.uint8 and channels in (3, 4):
        return (
            f"{key.dtype} samples; re-save it as 8-bit RGB, e.g. `vips scale in.tif "
            "out.tif[tile,compression=deflate,bigtiff]` (stretches its range to 0-255)"
        )
    if key.photometric == tifffile.PHOTOMETRIC.SEPARATED:
        return "CMYK samples; re-save it as RGB"
    return f"{channels} channels (a multiplexed or fluorescence image?); only RGB or RGBA slides can be read"


def _over_white(band: np.ndarray, alpha: str | None) -> np.ndarray:
    """Return the ``(3, rows, width)`` RGB of a ``(4, rows, width)`` band, its alpha composited over white.

    ``alpha``: "unassociated" (straight: ``(c * a + 255 * (255 - a)) / 255``,
    rounded), "associated" (premultiplied: ``c + 255 - a``), or None (the
    fourth sample is not alpha and is dropped). Opaque pixels keep their RGB;
    a band with no transparent pixel is returned as a view of its first three
    channels.
    """
    rgb = band[:3]
    if alpha is None or int(band[3].min()) == 255:
        return rgb
    out = np.empty(rgb.shape, dtype=np.uint8)
    opacity = band[3].astype(np.uint16)
    if alpha == "associated":
        clear = 255 - opacity
        for channel in range(3):
            out[channel] = np.minimum(rgb[channel] + clear, 255)
    else:
        white = (255 - opacity) * 255 + 127  # at most 65152: uint16 holds every sum below
        for channel in range(3):
            out[channel] = (rgb[channel] * opacity + white) // 255
    return out


def _size(nbytes: int) -> str:
    """Return ``nbytes`` for a message, in binary units: "112 GiB", "1.5 MiB", "52 bytes"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else f"{value:.1f} {unit}"
    return f"{nbytes} bytes"


def _compression_name(code: int) -> str:
    try:
        return tifffile.COMPRESSION(code).name.lower()
    except ValueError:
        return f"compression {code}"


def _predictor_name(code: int) -> str:
    try:
        return tifffile.PREDICTOR(code).name.lower()
    except ValueError:
        return f"{code}"


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


def _rebanded(blocks: Iterator[tuple[int, np.ndarray]], rows: int) -> Iterator[np.ndarray]:
    """Regroup ``(y0, block)`` row blocks (in order, any heights) into bands of ``rows`` rows.

    A band is a whole block or a new array, never a view of part of one, so
    that no block outlives the next one's decoding, whatever bands the
    caller keeps.
    """
    pending: list[np.ndarray] = []  # rows not served yet, fewer than ``rows``
    have = 0
    for _, block in blocks:
        height = block.shape[1]
        start = 0
        if have:
            start = min(rows - have, height)
            pending.append(block[:, :start])
            have += start
            if have == rows:
                yield np.concatenate(pending, axis=1)
                pending, have = [], 0
        while height - start >= rows:
            yield block if start == 0 and height == rows else block[:, start : start + rows].copy()
            start += rows
        if start < height:
            pending.append(block if start == 0 else block[:, start:].copy())
            have += height - start
        del block
    if have:
        yield np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
