"""The Kaggle submission: probability stores -> thresholded masks -> RLE, streamed column block by column block.

A probability store (:mod:`tilepipe.inference.predict`) holds ``v = round(p * 255)``.
A pixel is foreground when ``v >= foreground_cutoff(threshold)``, the
cutoff being ``threshold * 255`` rounded half up: for the recipe's 0.5 the
cutoff is 128, and ``v >= 128`` holds exactly when ``p >= 0.5`` (127.5
rounds to the even 128); for other thresholds it is ``p >= threshold`` up
to half a step of 1/255.

Kaggle's RLE numbers pixels column by column (:mod:`tilepipe.io.rle`), so a
mask is encoded from blocks of whole columns (all rows, a few chunks wide,
at most ``block_bytes`` of probability): runs are found within each block
and a run that ends at the bottom of a block's last column and goes on at
the top of the next block's first column is merged. No whole-slide mask
is ever held.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.io import rle
from tilepipe.io.kaggle import read_id_csv
from tilepipe.stores.probability import foreground_cutoff, read_probability

__all__ = ["BLOCK_BYTES", "encode_prediction", "write_submission"]

BLOCK_BYTES = 64 << 20  # probability bytes per column block


def encode_prediction(prob_store_path: str | os.PathLike, threshold: float, *, block_bytes: int = BLOCK_BYTES) -> str:
    """Return the Kaggle RLE of the probability store's mask at ``threshold`` (see the module docstring).

    Equal to ``tilepipe.io.rle.encode(probability >= foreground_cutoff(threshold))``;
    reads column blocks of at most ``block_bytes`` (at least one chunk wide).
    """
    cutoff = foreground_cutoff(threshold)
    probability = read_probability(prob_store_path)
    height, width = probability.shape
    chunk_width = probability.chunks[1]
    block = max(1, block_bytes // (height * chunk_width)) * chunk_width
    blocks = ((x0, probability[:, x0 : x0 + block] >= cutoff) for x0 in range(0, width, block))
    return rle.encode_column_blocks(blocks, height)


def write_submission(
    sample_submission_csv: str | os.PathLike,
    predictions: Mapping[str, str | os.PathLike],
    threshold: float,
    out_csv: str | os.PathLike,
) -> None:
    """Write ``out_csv`` (``id,predicted``): every id of the sample submission, in its order, with its RLE.

    ``predictions`` maps slide ids to probability stores. An empty mask is
    an empty ``predicted``. Raises InputError naming the sample submission
    when it lists no ids, lacks the ``id`` column, repeats an id, or has an
    id without a prediction, before anything is written; the CSV appears
    atomically, written row by row.
    """
    sample_submission_csv = Path(sample_submission_csv)
    ids = _sample_ids(sample_submission_csv)
    missing = [slide for slide in ids if slide not in predictions]
    if missing:
        raise InputError(
            sample_submission_csv,
            f"id {missing[0]} has no prediction ({len(missing)} of {len(ids)} ids have none)",
        )
    foreground_cutoff(threshold)  # a bad threshold fails before anything is read
    with atomic_output(out_csv) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "predicted"])
        for slide in ids:
            writer.writerow([slide, encode_prediction(predictions[slide], threshold)])


def _sample_ids(path: Path) -> list[str]:
    """Return the ids of the sample submission at ``path``, in order (InputError when unusable)."""
    ids = read_id_csv(path, ("id",), "sample submission")["id"]
    if ids.empty:
        raise InputError(path, "sample submission lists no ids")
    return ids.tolist()
