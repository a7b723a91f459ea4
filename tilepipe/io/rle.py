"""Kaggle run-length encoding of binary masks.

Format: space-separated ``start length`` pairs; starts are 1-indexed and
pixels are numbered top to bottom, then left to right (column-major,
Fortran order). An empty mask is the empty string. A run that ends at the
bottom of column x and goes on at the top of column x + 1 is one run.

Masks are ``(y, x)`` arrays; foreground is any non-zero value. Neither
direction transposes the mask or builds a whole-mask array wider than one
byte per pixel:

- encoding sweeps row bands, compares each row with the row above eight
  pixels at a time (as uint64 words) and looks at single pixels only in the
  few words that changed;
- decoding cuts runs into per-column segments, marks where each segment
  starts and stops, and fills the rows top to bottom with a row-wise XOR,
  so any window of the mask can be decoded on its own (used to write mask
  chunks) and the result is C-contiguous.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tilepipe.errors import InputError

__all__ = ["Runs", "decode", "encode", "encode_column_blocks", "join_decimal", "parse", "runs_of"]

# Bytes of mask per row band while encoding: small enough to stay in cache.
_BAND_BYTES = 4 << 20
_WORD = 8  # pixels per uint64 word
_DIRECT_DTYPES = (np.dtype(np.bool_), np.dtype(np.uint8), np.dtype(np.int8))
_DIGITS_AND_SPACES = b"0123456789 "
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, eq=False)
class Runs:
    """Validated runs of one mask.

    ``starts`` are 0-based column-major pixel indices (int64), ``lengths``
    pixel counts (int64), ``shape`` is ``(height, width)`` in pixels.
    """

    starts: np.ndarray
    lengths: np.ndarray
    shape: tuple[int, int]

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(x, y0, y1)`` int64 arrays: each run cut at column ends.

        Segment ``i`` covers rows ``y0[i]:y1[i]`` of column ``x[i]``;
        segments are sorted by column, then row.
        """
        return self._segments

    @cached_property
    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = self.shape[0]
        starts = self.starts
        ends = self.starts + self.lengths  # exclusive
        first = starts // h
        last = (ends - 1) // h
        count = last - first + 1
        run = np.repeat(np.arange(starts.size), count)
        offset = np.arange(run.size) - np.repeat(np.cumsum(count) - count, count)
        x = first[run] + offset
        y0 = np.where(offset == 0, starts[run] - first[run] * h, 0)
        y1 = np.where(x == last[run], ends[run] - last[run] * h, h)
        return x, y0, y1

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return the mask window rows ``y0:y1``, columns ``x0:x1``.

        Result: ``(y1 - y0, x1 - x0)`` uint8 0/1, C-contiguous. The window
        must lie inside the mask.
        """
        h, w = self.shape
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"window {(y0, y1, x0, x1)} outside mask of shape {self.shape}")
        out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        if out.size == 0:
            return out
        x, top, bottom = self._segments
        lo, hi = np.searchsorted(x, [x0, x1])
        x, top, bottom = x[lo:hi], top[lo:hi], bottom[lo:hi]
        inside = (bottom > y0) & (top < y1)
        if not inside.any():
            return out
        cols = x[inside] - x0
        top = np.maximum(top[inside], y0) - y0
        bottom = bottom[inside] - y0
        # Toggle on at each segment's first row and off below its last one;
        # segments of one column never overlap, so each index list is unique.
        out[top, cols] ^= 1
        ends_inside = bottom < out.shape[0]
        out[bottom[ends_inside], cols[ends_inside]] ^= 1
        # Each row is the row above XOR its toggles. Rows above the first
        # toggle and below the last stay zero.
        first_row, last_row = int(top.min()), min(int(bottom.max()), out.shape[0] - 1)
        xor = np.bitwise_xor
        for above, row in zip(out[first_row:last_row], out[first_row + 1 : last_row + 1], strict=False):
            xor(above, row, row)  # in place; a positional ``out`` is cheaper per call
        return out


def parse(rle: str, shape: tuple[int, int], source: str | os.PathLike | None = None) -> Runs:
    """Parse and validate an RLE string for a mask of ``shape`` = ``(height, width)``.

    ``None`` or NaN (an empty CSV cell) is the empty mask. Raises
    :class:`InputError` naming ``source`` for an odd number of numbers,
    tokens that are not integers, starts below 1, lengths below 1, runs
    past the last pixel, and runs that overlap or are out of order.
    """
    h, w = (int(v) for v in shape)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ""
    rle = str(rle).strip()
    values = _numbers(rle, source)
    if values.size % 2:
        raise InputError(source, f"RLE has an odd number of numbers ({values.size}); it must be start/length pairs")
    starts = values[0::2] - 1
    lengths = values[1::2]
    _check_runs(rle, starts, lengths, h, w, source)
    return Runs(starts, lengths, (h, w))


def _numbers(rle: str, source: str | os.PathLike | None) -> np.ndarray:
    """Return the integers of ``rle`` (stripped) as int64, in order."""
    if rle.isascii() and not rle.encode("ascii").translate(None, _DIGITS_AND_SPACES):
        return np.fromstring(rle, dtype=np.int64, sep=" ")
    tokens = rle.split()
    bad = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
    if bad is not None:
        raise InputError(source, f"RLE token {bad!r} is not an integer")
    # Clip to int64 so that huge numbers fail the range checks below.
    limit = np.iinfo(np.int64).max
    return np.array([max(-limit, min(int(t), limit)) for t in tokens], dtype=np.int64)


def _check_runs(
    rle: str, starts: np.ndarray, lengths: np.ndarray, h: int, w: int, source: str | os.PathLike | None
) -> None:
    """Raise InputError unless the runs start at pixel 1 or later, are not
    empty, end inside the ``h`` x ``w`` mask, and are ordered and disjoint."""
    if starts.size == 0:
        return

    def fail(bad: np.ndarray, problem: str) -> None:
        i = int(np.argmax(bad))
        start, length = rle.split()[2 * i : 2 * i + 2]
        raise InputError(source, f"RLE run {i + 1} " + problem.format(start=start, length=length))

    if (starts < 0).any():
        fail(starts < 0, "starts at {start}; starts are 1-indexed, so at least 1")
    if (lengths < 1).any():
        fail(lengths < 1, "has length {length}; lengths must be at least 1")
    pixels = h * w
    past_end = lengths > pixels - starts
    if past_end.any():
        fail(
            past_end,
            f"(start {{start}}, length {{length}}) ends past the last pixel of the {h} x {w} mask ({pixels} pixels)",
        )
    ends = starts + lengths
    overlap = np.flatnonzero(starts[1:] < ends[:-1])
    if overlap.size:
        i = int(overlap[0])
        raise InputError(
            source,
            f"RLE runs {i + 1} and {i + 2} overlap or are out of order: run {i + 1} covers pixels "
            f"{int(starts[i]) + 1} to {int(ends[i])}, run {i + 2} starts at {int(starts[i + 1]) + 1}",
        )


def decode(rle: str, shape: tuple[int, int], source: str | os.PathLike | None = None) -> np.ndarray:
    """Decode ``rle`` into a ``(height, width)`` uint8 0/1 C-contiguous mask.

    ``source`` names the RLE's origin in error messages (see :func:`parse`).
    """
    runs = parse(rle, shape, source)
    h, w = runs.shape
    return runs.window(0, h, 0, w)


def encode(mask: np.ndarray) -> str:
    """Encode a ``(y, x)`` mask (non-zero = foreground) as a Kaggle RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (y, x), got shape {mask.shape}")
    starts, lengths = runs_of(mask)
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = lengths
    return join_decimal(pairs)


def encode_column_blocks(blocks: Iterable[tuple[int, np.ndarray]], height: int) -> str:
    """Return the Kaggle RLE of a mask given as column blocks, never holding the whole mask.

    ``blocks`` yields ``(x0, block)`` left to right, ``block`` the ``(height,
    w)`` 0/1 or bool columns ``x0 : x0 + w``, adjacent and covering the mask.
    A run that ends at the bottom of one block's last column and goes on at
    the top of the next block's first column is merged, so the result
    equals :func:`encode` of the whole mask.
    """
    starts, lengths = [], []
    run_end = -1  # exclusive column-major end of the last run so far
    for x0, block in blocks:
        block_starts, block_lengths = runs_of(block)
        if block_starts.size == 0:
            continue
        block_starts += x0 * height
        if block_starts[0] == run_end:
            lengths[-1][-1] += block_lengths[0]
            block_starts, block_lengths = block_starts[1:], block_lengths[1:]
        if block_starts.size:
            starts.append(block_starts)
            lengths.append(block_lengths)
        run_end = int(starts[-1][-1] + lengths[-1][-1])
    if not starts:
        return ""
    pairs = np.empty(sum(s.size for s in starts) * 2, dtype=np.int64)
    pairs[0::2] = np.concatenate(starts) + 1
    pairs[1::2] = np.concatenate(lengths)
    return join_decimal(pairs)


def runs_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return 0-based column-major ``(starts, lengths)`` int64 of the runs of ``mask``."""
    h, w = mask.shape
    if mask.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rising, falling = [], []
    for y0, rows in _row_bands(mask):
        band_rising, band_falling = _band_transitions(rows, y0, h)
        rising.append(band_rising)
        falling.append(band_falling)
    starts = np.sort(np.concatenate(rising))
    ends = np.sort(np.concatenate(falling))
    # An end at the bottom of column x is the same pixel index as a start at
    # the top of column x + 1: those two segments are one run.
    joined = np.flatnonzero(ends[:-1] == starts[1:])
    starts = np.delete(starts, joined + 1)
    ends = np.delete(ends, joined)
    return starts, ends - starts


def _row_bands(mask: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(y0, rows)`` for the row boundaries ``y0 .. y0 + n - 1``, all of ``0 .. h`` in turn.

    Boundary ``y`` lies between rows ``y - 1`` and ``y`` of the ``(h, w)`` mask.
    ``rows`` is a ``(n + 1, ceil(w / 8))`` uint64 array of mask rows
    ``y0 - 1 .. y0 + n - 1``, eight pixels per word, a byte non-zero where
    the pixel is foreground; rows outside the mask are zero. It is a view of
    the mask where the mask's bytes allow it, else a zero-padded 0/1 copy.
    """
    h, w = mask.shape
    direct = mask.dtype in _DIRECT_DTYPES and w % _WORD == 0 and mask.flags.c_contiguous
    words = mask.view(np.uint64) if direct else None
    band = max(1, _BAND_BYTES // w)
    # Boundary 0 (above the first row) and boundary h (below the last) pair
    # a mask row with a row of zeros, so they get one-row bands of their own.
    edges = [0, *range(1, h, band), h, h + 1]
    for y0, y1 in zip(edges[:-1], edges[1:], strict=False):
        if direct and y0 >= 1 and y1 <= h:
            yield y0, words[y0 - 1 : y1]
        else:
            yield y0, _padded_words(mask, y0 - 1, y1)


def _padded_words(mask: np.ndarray, y0: int, y1: int) -> np.ndarray:
    """Return mask rows ``y0:y1`` (zero outside the mask) as 0/1 bytes in uint64 words."""
    h, w = mask.shape
    padded = np.zeros((y1 - y0, -(-w // _WORD) * _WORD), dtype=np.uint8)
    top, bottom = max(y0, 0), min(y1, h)
    # Compare in the mask's own memory order (a sequential read even for a
    # Fortran-ordered mask), then copy into the row-major band.
    padded[top - y0 : bottom - y0, :w] = mask[top:bottom] != 0
    return padded.view(np.uint64)


def _band_transitions(rows: np.ndarray, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Return column-major pixel indices where runs start and end in one band.

    ``rows`` as yielded by :func:`_row_bands`. A run starts at ``(y, x)``
    when pixel ``(y, x)`` is foreground and ``(y - 1, x)`` is not; it ends
    (exclusive) at ``(y, x)`` in the opposite case. Both int64, unsorted.
    """
    below, above = rows[1:], rows[:-1]
    changed = np.flatnonzero(below != above)
    is_below = below.reshape(-1)[changed].view(np.uint8).reshape(-1, _WORD) != 0
    is_above = above.reshape(-1)[changed].view(np.uint8).reshape(-1, _WORD) != 0
    y, x_of_word = np.divmod(changed, rows.shape[1])
    y += y0
    x_of_word *= _WORD

    def column_major(edge: np.ndarray) -> np.ndarray:
        i, bit = np.nonzero(edge)
        return (x_of_word[i] + bit) * h + y[i]

    return column_major(is_below & ~is_above), column_major(is_above & ~is_below)


def join_decimal(values: np.ndarray) -> str:
    """Return non-negative integers as decimal text separated by single spaces.

    Vectorised: about 4x faster than ``" ".join(map(str, values))``.
    """
    if values.size == 0:
        return ""
    width = len(str(int(values.max())))
    # One row of text per number: digits right-aligned, then a space.
    text = np.empty((values.size, width + 1), dtype=np.uint8)
    text[:, width] = ord(" ")
    rest = values.astype(np.min_scalar_type(int(values.max())))
    for column in range(width - 1, -1, -1):
        text[:, column] = rest % 10
        rest //= 10
    text[:, :width] += ord("0")
    digits = np.searchsorted(10 ** np.arange(1, width, dtype=np.int64), values, side="right") + 1
    used = np.arange(width + 1) >= (width - digits)[:, None]
    return text[used][:-1].tobytes().decode("ascii")
