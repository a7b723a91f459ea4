"""Kaggle run-length encoding of binary masks.

Format: space-separated ``start length`` pairs; starts are 1-indexed and
pixels are numbered top to bottom, then left to right (column-major,
Fortran order). An empty mask is the empty string.

Masks are ``(y, x)`` arrays; foreground is any non-zero value. Decoding
never builds an int64 array of the whole mask: runs are cut into vertical
per-column segments and painted with an int8 cumulative sum down the rows,
so the result is C-contiguous without a transpose copy, and any window of
the mask can be decoded on its own (used to write mask chunks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tilepipe.errors import InputError

__all__ = ["Runs", "parse", "decode", "encode"]


@dataclass(frozen=True)
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

        Segment ``i`` covers rows ``y0[i]:y1[i]`` of column ``x[i]``.
        """
        h = self.shape[0]
        s = self.starts
        e = self.starts + self.lengths  # exclusive
        first = s // h
        last = (e - 1) // h
        count = last - first + 1
        run = np.repeat(np.arange(s.size), count)
        offset = np.arange(run.size) - np.repeat(np.cumsum(count) - count, count)
        x = first[run] + offset
        y0 = np.where(offset == 0, s[run] - first[run] * h, 0)
        y1 = np.where(x == last[run], e[run] - last[run] * h, h)
        return x, y0, y1

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return the mask window rows ``y0:y1``, columns ``x0:x1``.

        Result: ``(y1 - y0, x1 - x0)`` uint8 0/1, C-contiguous. The window
        must lie inside the mask.
        """
        h, w = self.shape
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"window {(y0, y1, x0, x1)} outside mask of shape {self.shape}")
        out = np.zeros((y1 - y0 + 1, x1 - x0), dtype=np.int8)
        sx, sy0, sy1 = self.segments()
        keep = (sx >= x0) & (sx < x1) & (sy1 > y0) & (sy0 < y1)
        cols = sx[keep] - x0
        top = np.clip(sy0[keep], y0, y1) - y0
        bottom = np.clip(sy1[keep], y0, y1) - y0
        # Segments in one column never overlap, so the indices of each
        # assignment are unique and plain fancy indexing is exact.
        out[top, cols] += 1
        out[bottom, cols] -= 1
        np.cumsum(out, axis=0, dtype=np.int8, out=out)
        return out[:-1].view(np.uint8)


def parse(rle: str, shape: tuple[int, int], source: str | os.PathLike | None = None) -> Runs:
    """Parse and validate an RLE string for a mask of ``shape`` = ``(height, width)``.

    Raises :class:`InputError` naming ``source`` for an odd number of
    tokens, tokens that are not positive integers, and runs that overlap,
    are out of order or fall outside the mask.
    """
    h, w = (int(v) for v in shape)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ""
    tokens = str(rle).split()
    if len(tokens) % 2:
        raise InputError(source, f"RLE has an odd number of tokens ({len(tokens)})")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not _is_int(t))
        raise InputError(source, f"RLE token {bad!r} is not an integer") from None
    starts = values[0::2] - 1
    lengths = values[1::2]
    if starts.size:
        if starts.min() < 0:
            raise InputError(source, "RLE start below 1 (starts are 1-indexed)")
        if lengths.min() < 1:
            raise InputError(source, "RLE run length below 1")
        ends = starts + lengths
        if ends[-1] > h * w or ends.max() > h * w:
            raise InputError(
                source, f"RLE run ends at pixel {int(ends.max())}, past the mask's {h * w} pixels ({h} x {w})"
            )
        overlap = np.flatnonzero(starts[1:] < ends[:-1])
        if overlap.size:
            i = int(overlap[0])
            raise InputError(
                source,
                f"RLE runs {i + 1} and {i + 2} overlap or are out of order "
                f"(start {int(starts[i]) + 1} length {int(lengths[i])}, then start {int(starts[i + 1]) + 1})",
            )
    return Runs(starts, lengths, (h, w))


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode ``rle`` into a ``(height, width)`` uint8 0/1 C-contiguous mask."""
    runs = parse(rle, shape)
    h, w = runs.shape
    return runs.window(0, h, 0, w)


def encode(mask: np.ndarray) -> str:
    """Encode a ``(y, x)`` mask (non-zero = foreground) as a Kaggle RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (y, x), got shape {mask.shape}")
    starts, lengths = _runs_of(mask)
    if starts.size == 0:
        return ""
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def _runs_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return 0-based column-major ``(starts, lengths)`` of the runs of ``mask``."""
    h, w = mask.shape
    fg = mask if mask.dtype == np.bool_ else mask != 0
    # Row transitions, C-order: rising edges start a segment, falling edges end one.
    pad = np.zeros((1, w), dtype=np.bool_)
    edges = np.concatenate([pad, fg, pad], axis=0)
    change = edges[1:] != edges[:-1]  # (h + 1, w)
    rows, cols = np.nonzero(change)
    flat = cols.astype(np.int64) * h + rows
    flat.sort()
    # Consecutive positions alternate start, end. A run that ends at the
    # bottom of column x and restarts at the top of x + 1 is one Kaggle run.
    starts = flat[0::2]
    ends = flat[1::2]
    if starts.size > 1:
        joined = ends[:-1] == starts[1:]
        if joined.any():
            keep_start = np.concatenate([[True], ~joined])
            keep_end = np.concatenate([~joined, [True]])
            starts = starts[keep_start]
            ends = ends[keep_end]
    return starts, ends - starts
