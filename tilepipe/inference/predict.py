"""Whole-slide inference: a fold ensemble with flip TTA, stitched by centre crops into a probability store.

``predict_slide`` sweeps the kept centres of :mod:`tilepipe.inference.windows` one
row at a time, top to bottom. For each row it

1. measures the tissue fraction of every kept centre on a low pyramid
   level (:func:`tilepipe.inference.windows.choose_tissue_level`); centres with no
   more tissue than ``min_tissue`` are background: their windows never
   reach a model and their pixels are 0;
2. reads the row's windows as one band of the pyramid level nearest the
   models' scale (:func:`tilepipe.inference.windows.choose_read_level`), zero-filled
   past the slide's border, and scales each window exactly as training
   does (:mod:`tilepipe.data.preprocess`: ``cv2.INTER_AREA`` to ``input_size``,
   the slide's stain normalisation when the models have one, ImageNet mean
   and std);
3. runs batches of windows through every model and every flip: encoder,
   then the classification head; windows whose classification probability
   (averaged over models and flips) is below ``clf_threshold`` are set to 0
   without running any decoder; the others get the mean over models and
   flips of the sigmoid of the segmentation logits (each un-flipped);
4. resizes each probability map bilinearly to the window's level-0 size,
   keeps its centre and writes the row of centres as one band of whole
   ``keep`` x ``keep`` chunks.

Memory is a row band of windows plus one batch (and its encoder features,
kept for every model and flip until the classification gate has decided),
never a whole-slide array. The output appears atomically.

Output (``results/predictions/{stage}/{id}.zarr``, :mod:`tilepipe.stores.probability`):
an NGFF 0.5 label image of the slide. Its array ``"0"`` is the probability,
``(y, x)`` uint8 ``round(p * 255)`` (half to even) at level-0 resolution,
chunks ``(keep, keep)`` aligned with the kept centres (all-zero chunks are
not stored); its levels ``"1"``, ``"2"``, ... (the slide's level shapes) are
2x2 means, for viewers. attrs["ome"]["image-label"]["source"]["image"] is
the slide store's path relative to the output; attrs["tilepipe"] says what
it is and how it was made. Its group ``uncertainty`` is a label image of
the same slide and layout: the ensemble's spread,
``round(min(2 sigma, 1) * 255)`` (:mod:`tilepipe.inference.ensemble`).

With ``windows_path``, a CSV of every window (:data:`WINDOW_COLUMNS`): its
kept centre (level-0 pixels), tissue fraction, classification
probability and whether it was segmented, so that the gate can be judged
(and swept) afterwards.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import nn
from tqdm import tqdm

from tilepipe.atomic import atomic_output
from tilepipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalisation, normalise, resize_image
from tilepipe.data.stain import ReinhardMap, slide_map
from tilepipe.data.tissue import tissue_mask
from tilepipe.errors import InputError
from tilepipe.inference.ensemble import Ensemble
from tilepipe.inference.settings import with_geometry
from tilepipe.inference.windows import CentreGrid, Window, centre_grid, choose_read_level, choose_tissue_level
from tilepipe.model.checkpoint import load_ensemble
from tilepipe.model.device import select_device
from tilepipe.stores.ngff import relative_source
from tilepipe.stores.probability import create_probability, create_uncertainty
from tilepipe.stores.slide import SlideStore

__all__ = ["WINDOW_COLUMNS", "predict_slide", "predict_with_checkpoints", "tissue_fractions"]

WINDOW_COLUMNS = ["centre_y", "centre_x", "centre_height", "centre_width", "tissue", "clf", "segmented"]


def predict_slide(
    store_path: str | os.PathLike,
    out_path: str | os.PathLike,
    models: Sequence[nn.Module],
    *,
    tile_size: int,
    input_size: int,
    read_level: int | str,
    tta: Sequence[str],
    clf_threshold: float | None,
    min_tissue: float | None,
    saturation_threshold: int,
    batch_size: int,
    device: str | torch.device,
    amp: bool,
    keep: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
    progress: bool = True,
    windows_path: str | os.PathLike | None = None,
    stain: dict | None = None,
    weights: Sequence[float] | None = None,
) -> dict:
    """Predict the slide store at ``store_path`` with the ensemble ``models``; write the probability store ``out_path``.

    ``out_path`` is a label image of the slide: it names ``store_path`` by
    its path relative to ``out_path``, so keep them where they are written.
    The settings are the config's (:func:`prediction_settings` maps a
    resolved config to them); there are no defaults to drift from it.
    Geometry (level-0 pixels): ``tile_size`` windows keeping their
    ``keep`` centre (default ``tile_size // 2``), see :mod:`tilepipe.inference.windows`.
    ``input_size`` is the side the models take (a multiple of 32 for the
    U-Net); ``read_level`` ``"auto"`` or a pyramid level.

    ``models`` need ``encode(x)``, ``classify(features)`` (when
    ``clf_threshold`` is set) and ``segment(features)`` as
    :class:`tilepipe.model.Unet` has; they are put in eval mode and moved to
    ``device`` (``"auto"``: CUDA when available). ``tta``: flips from
    :data:`tilepipe.inference.ensemble.FLIPS` (the recipe: all four). ``clf_threshold``: windows whose
    mean classification probability is below it are 0 and skip the decoder;
    None runs every decoder. ``min_tissue``: a window runs only when the
    tissue fraction of its kept centre (HSV saturation above
    ``saturation_threshold`` on a low pyramid level) exceeds it; 0 skips
    centres without any tissue, None skips nothing. ``windows_path``: where
    to write the table of windows (none when None). ``amp``: float16
    autocast on CUDA (no effect on the CPU). ``mean`` and ``std``: the
    models' input normalisation (a checkpoint's geometry stores it).
    ``stain``: the models' stain normalisation (a checkpoint's geometry
    ``stain``, :func:`tilepipe.data.stain.normalisation_settings`): the
    slide's map to it is measured once and applied to every resized window;
    None: none. ``weights``: one per model, a weighted ensemble mean
    (:class:`tilepipe.inference.ensemble.Ensemble`); None: the plain mean.

    Returns stats: ``windows`` (total), ``skipped_background``,
    ``skipped_classifier``, ``segmented`` (window counts) and ``seconds``.
    """
    started = time.perf_counter()
    store = SlideStore(store_path)
    height, width = store.shape
    grid = centre_grid(height, width, tile_size=tile_size, keep=tile_size // 2 if keep is None else keep)
    level = choose_read_level(grid, input_size, len(store.levels), read_level)
    if batch_size < 1:
        raise InputError(None, f"batch_size must be at least 1, got {batch_size}")
    ensemble = Ensemble(
        models, tta, clf_threshold, select_device(device, "train.device"), amp, channels_last, weights=weights
    )
    tissue_level = None if min_tissue is None else choose_tissue_level(grid.keep, len(store.levels))
    stain_map = None if stain is None else slide_map(store, stain)
    reader = _WindowReader(store, grid, level, input_size, mean, std, stain_map)
    settings = {
        "source": os.fspath(store_path),
        "tile_size": grid.tile_size,
        "keep": grid.keep,
        "input_size": input_size,
        "read_level": level,
        "tta": list(tta),
        "clf_threshold": clf_threshold,
        "min_tissue": min_tissue,
        "models": len(models),
    }
    if weights is not None:  # only then, so unweighted outputs stay as they were
        settings["weights"] = [float(w) for w in weights]
    if stain_map is not None:  # only then, so outputs without normalisation stay as they were
        settings["stain"] = {**stain, "slide_map": {"scale": stain_map.scale, "offset": stain_map.offset}}
    stats = {"windows": len(grid), "skipped_background": 0, "skipped_classifier": 0, "segmented": 0}
    out_path = Path(out_path)
    window_rows = []
    with (
        atomic_output(out_path) as tmp,
        ThreadPoolExecutor(1) as pool,  # encodes the output's chunks while this thread waits
        tqdm(total=len(grid), desc=out_path.stem, unit="window", disable=not progress) as bar,
    ):
        source = relative_source(out_path, store_path)
        output = create_probability(
            tmp, out_path.stem, store.level_shapes, grid.keep, settings, source=source, pool=pool
        )
        spread_output = create_uncertainty(tmp, store.level_shapes, grid.keep, source=source, pool=pool)
        for row in range(grid.rows):
            windows = grid.row(row)
            fractions = [None] * len(windows)
            if tissue_level is not None:
                fractions = tissue_fractions(store, grid, row, tissue_level, saturation_threshold).tolist()
            rows = {w: _window_row(w, fraction) for w, fraction in zip(windows, fractions, strict=True)}
            window_rows += rows.values()
            if tissue_level is not None:
                windows = [w for w, fraction in zip(windows, fractions, strict=True) if fraction > min_tissue]
            stats["skipped_background"] += grid.cols - len(windows)
            bar.update(grid.cols - len(windows))
            centre_y, centre_height = grid.row_y(row)
            band = np.zeros((centre_height, width), dtype=np.uint8)
            spread_band = np.zeros_like(band)
            reader.read_row(windows)
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                prediction = ensemble.predict_centres(reader.inputs(batch), grid, batch)
                if prediction.clf is not None:
                    for window, clf in zip(batch, prediction.clf.tolist(), strict=True):
                        rows[window]["clf"] = round(clf, 6)
                for window, centre, spread in prediction.centres:
                    band[:, window.centre_x : window.centre_x + window.centre_width] = centre
                    spread_band[:, window.centre_x : window.centre_x + window.centre_width] = spread
                    rows[window]["segmented"] = 1
                stats["segmented"] += len(prediction.centres)
                stats["skipped_classifier"] += len(batch) - len(prediction.centres)
                bar.update(len(batch))
            output.write(band)  # rows centre_y : centre_y + centre_height, top to bottom
            spread_output.write(spread_band)
        store.copy_pixel_size_to(zarr.open_group(tmp, mode="r+"))
        store.copy_pixel_size_to(zarr.open_group(tmp / "uncertainty", mode="r+"))
        if windows_path is not None:
            _write_windows(windows_path, window_rows)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def predict_with_checkpoints(
    store_path: str | os.PathLike,
    out_path: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    settings: dict,
    *,
    assumed_mpp: float,
    **runtime,
) -> tuple[dict, list[str]]:
    """Predict ``store_path`` with the ensemble of the ``checkpoints`` files, as the models were trained.

    Each checkpoint is read once; their geometry replaces that of
    ``settings`` (``prediction_settings``), and windows are resampled when
    the slide's recorded pixel size (``assumed_mpp`` micrometres when it
    has none) differs from the models' (:func:`tilepipe.inference.settings.with_geometry`).
    ``runtime``: the other :func:`predict_slide` arguments (batch size,
    device, ...). Returns its stats and notes for the log: the pixel size
    and where it came from, and each setting that changed.
    """
    models, geometry = load_ensemble(list(checkpoints))
    pixel_size = SlideStore(store_path).pixel_size(assumed_mpp)
    settings, changes = with_geometry(settings, geometry, pixel_size.mpp)
    notes = [f"pixel size {pixel_size.mpp:.4g} um ({pixel_size.source})"]
    notes += [f"the checkpoints' geometry replaces the config's {change}" for change in changes]
    return predict_slide(store_path, out_path, models, **settings, **runtime), notes


def _window_row(window: Window, tissue: float | None) -> dict:
    return {
        "centre_y": window.centre_y,
        "centre_x": window.centre_x,
        "centre_height": window.centre_height,
        "centre_width": window.centre_width,
        "tissue": None if tissue is None else round(tissue, 6),
        "clf": None,
        "segmented": 0,
    }


def _write_windows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write the window table (:data:`WINDOW_COLUMNS`; empty cells for values not measured), atomically."""
    with atomic_output(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as table:
        writer = csv.DictWriter(table, fieldnames=WINDOW_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def tissue_fractions(
    store: SlideStore, grid: CentreGrid, row: int, level: int, saturation_threshold: int
) -> np.ndarray:
    """Return the tissue fraction (0..1, float64) of each kept centre of centre row ``row``, left to right.

    Measured on pyramid ``level``, whose downsample must divide ``keep``:
    the share of the centre's pixels at that level whose HSV saturation
    (OpenCV, 0..255) exceeds ``saturation_threshold``.
    """
    down = 2**level
    side = grid.keep // down
    centre_y, centre_height = grid.row_y(row)
    level_height, level_width = store.level_shape(level)
    y0, y1 = centre_y // down, min(-(-(centre_y + centre_height) // down), level_height)
    band = store.levels[level][:, y0:y1, :]
    tissue_per_column = tissue_mask(band, saturation_threshold).sum(axis=0)
    starts = np.arange(grid.cols) * side
    widths = np.minimum(starts + side, level_width) - starts
    return np.add.reduceat(tissue_per_column, starts) / (widths * (y1 - y0))


class _WindowReader:
    """Reads the windows of one centre row as a band of the read level and scales them for the models."""

    def __init__(
        self,
        store: SlideStore,
        grid: CentreGrid,
        level: int,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        stain_map: ReinhardMap | None = None,
    ):
        self.store = store
        self.grid = grid
        self.level = level
        self.down = 2**level
        self.side = grid.tile_size // self.down
        self.input_size = input_size
        self.scale, self.offset = normalisation(tuple(mean), tuple(std))
        self.stain_map = stain_map  # the slide's stain normalisation (tilepipe.data.stain), or None
        self.band: np.ndarray | None = None
        self.band_x = 0

    def read_row(self, windows: list[Window]) -> None:
        """Read the band spanning ``windows`` (windows of one centre row, left to right)."""
        self.band = None
        if not windows:
            return
        x0, x1 = windows[0].x // self.down, windows[-1].x // self.down + self.side
        self.band_x = x0
        self.band = self.store.read_image(windows[0].y // self.down, x0, self.side, x1 - x0, self.level)

    def inputs(self, windows: list[Window]) -> np.ndarray:
        """Return the model inputs of ``windows`` (read by :meth:`read_row`): (b, 3, S, S) float32."""
        batch = np.empty((len(windows), 3, self.input_size, self.input_size), dtype=np.float32)
        for i, window in enumerate(windows):
            x = window.x // self.down - self.band_x
            image = resize_image(self.band[:, :, x : x + self.side], self.input_size)
            if self.stain_map is not None:  # as training: after the resize, before the mean/std scaling
                image = self.stain_map.apply(image)
            batch[i] = normalise(image, self.scale, self.offset)
        return batch
