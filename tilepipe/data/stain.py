"""Stain colour: stain jitter in optical density, and Reinhard normalisation of slides to the training slides.

Torch-free (numpy, and OpenCV for HSV saturation). Images are ``(y, x, c)``
uint8 RGB, as augmentations take them; a pixel value ``v`` stands for the
transmitted fraction ``(v + 1) / 256`` (never 0, so logarithms stay finite).

**Stain jitter** (:func:`jitter_stains`; the ``StainJitter`` augmentation of
:mod:`tilepipe.data.augment`): colour deconvolution with a fixed stain
matrix (Ruifrok & Johnston). Optical density ``od = -ln((v + 1) / 256)``
per channel is ``c @ M``: rows of ``M`` are the unit optical-density
vectors of two stains and of a residual (their normalised cross product),
``c`` the per-pixel stain concentrations. The jitter scales and shifts the
two stains' concentrations (Tellez et al. 2018, "HED" augmentation) and
leaves the residual alone, so every change of a pixel lies in the plane of
the two stains. :data:`STAIN_VECTORS`: ``h_pas`` (haematoxylin and periodic
acid-Schiff, the kidney slides' stain; Landini's colour deconvolution
vectors) and ``h_e`` (Ruifrok & Johnston's haematoxylin and eosin).

**Reinhard normalisation** (:class:`ReinhardMap`): Reinhard et al. 2001 in
their lαβ space (Ruderman's decorrelated log-LMS, as HistomicsTK; not
CIELAB: lαβ is exactly invertible, OpenCV's float CIELAB round trip is off
by up to 1.2 grey levels). A slide's statistics are the per-channel mean and
standard deviation of lαβ over its tissue pixels (HSV saturation above a
threshold, :mod:`tilepipe.data.tissue`) at the scale the network sees: on
the pyramid level training reads tiles from (:func:`stats_downsample`;
texture averaged away by a coarser level would shrink the standard
deviations and bias the means, lαβ being logarithmic), in a deterministic
sample of evenly spaced row bands of at most :data:`MAX_STATS_PIXELS`
pixels (:func:`slide_lab_stats`). The reference (:func:`fit_reference`) averages the training slides' means and
standard deviations, each slide weighing the same. Each slide's tissue is
then mapped by ``lab -> (lab - mean_slide) / std_slide * std_ref +
mean_ref``: one map per slide, so windows of a slide never disagree at
their seams. Glass is kept (a map fitted to the tissue can turn neutral
glass green): pixels are blended from unmapped to mapped as their HSV
saturation rises from half the tissue threshold to 1.5 times it
(:class:`ReinhardMap`). A slide with fewer than ``min_tissue_pixels``
tissue pixels in its sample is left as it is.

The reference travels in the models' checkpoints (geometry key ``stain``:
:func:`normalisation_settings`), so inference normalises each slide to the
statistics the models were trained on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tilepipe.atomic import atomic_output
from tilepipe.data.preprocess import auto_level
from tilepipe.data.tissue import tissue_mask
from tilepipe.errors import InputError
from tilepipe.stores.slide import SlideStore

__all__ = [
    "METHODS",
    "STAIN_VECTORS",
    "MAX_STATS_PIXELS",
    "LabStats",
    "ReinhardMap",
    "fit_reference",
    "jitter_stains",
    "lab_from_rgb",
    "normalisation_settings",
    "optical_density",
    "read_reference",
    "rgb_from_lab",
    "slide_lab_stats",
    "slide_map",
    "stain_matrix",
    "stats_downsample",
    "write_reference",
]

# The transmitted fraction of each uint8 value: (v + 1) / 256, in (0, 1].
_FRACTION = (np.arange(256, dtype=np.float64) + 1) / 256
_OD_LUT = (-np.log(_FRACTION)).astype(np.float32)

# ------------------------------------------------------------------ stain jitter

# Unit-free optical-density vectors (R, G, B) of two stains, normalised by stain_matrix.
STAIN_VECTORS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # Haematoxylin and PAS: G. Landini's colour deconvolution ("H PAS"), after Ruifrok & Johnston.
    "h_pas": ((0.644211, 0.716556, 0.266844), (0.175411, 0.972178, 0.154589)),
    # Haematoxylin and eosin: Ruifrok & Johnston 2001.
    "h_e": ((0.644211, 0.716556, 0.266844), (0.092789, 0.954111, 0.283111)),
}


def stain_matrix(stains: str | Sequence[Sequence[float]]) -> np.ndarray:
    """Return the (3, 3) float64 stain matrix of ``stains``: rows stain 1, stain 2, residual, each of unit length.

    ``stains`` is a name of :data:`STAIN_VECTORS` or two RGB optical-density
    vectors (non-negative, not parallel). The residual is the normalised
    cross product of the two. Raises ValueError for anything else.
    """
    if isinstance(stains, str):
        if stains not in STAIN_VECTORS:
            raise ValueError(f"unknown stains {stains!r}; expected one of {', '.join(STAIN_VECTORS)} or two vectors")
        stains = STAIN_VECTORS[stains]
    vectors = np.asarray(stains, dtype=np.float64)
    if vectors.shape != (2, 3) or not np.all(np.isfinite(vectors)) or np.any(vectors < 0):
        raise ValueError(f"stains must be two non-negative RGB optical-density vectors, got {stains!r}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"stain vectors must not be zero, got {stains!r}")
    vectors = vectors / norms
    residual = np.cross(vectors[0], vectors[1])
    if np.linalg.norm(residual) < 1e-3:
        raise ValueError(f"the two stain vectors are (nearly) parallel: {stains!r}")
    return np.vstack([vectors, residual / np.linalg.norm(residual)])


def optical_density(image_yxc: np.ndarray) -> np.ndarray:
    """Return the optical density ``-ln((v + 1) / 256)`` of a uint8 image, float32, same shape."""
    if image_yxc.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image_yxc.dtype}")
    return _OD_LUT[image_yxc]


def jitter_transform(
    matrix: np.ndarray, scale: Sequence[float], shift: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(T, t)``, float64 (3, 3) and (3,), with ``od @ T + t`` the optical density after the jitter.

    The jitter maps the concentrations ``c = od @ inv(matrix)`` of the two
    stains to ``c * scale + shift`` and keeps the residual's. With scale 1
    and shift 0, ``T`` is exactly the identity and ``t`` exactly 0.
    """
    gain = np.diag([scale[0] - 1.0, scale[1] - 1.0, 0.0])
    transform = np.eye(3) + np.linalg.inv(matrix) @ gain @ matrix
    offset = np.array([shift[0], shift[1], 0.0]) @ matrix
    return transform, offset


def jitter_stains(
    image_yxc: np.ndarray, matrix: np.ndarray, scale: Sequence[float], shift: Sequence[float]
) -> np.ndarray:
    """Return ``image_yxc`` ((y, x, 3) uint8 RGB) with its two stains' concentrations scaled and shifted.

    ``matrix``: :func:`stain_matrix`; ``scale`` and ``shift``: one factor
    and one offset (optical-density units) per stain. The result is uint8
    (rounded, clipped to 0..255); with scale (1, 1) and shift (0, 0) it
    equals the input.

    Computed as ``256 * exp(-(od @ T + t)) - 1`` (:func:`jitter_transform`)
    without a matrix product over the pixels: output channel ``j`` is
    ``256 * exp(-t[j]) * prod_i F_ij[v_i] - 1`` with the 256-entry tables
    ``F_ij = exp(-T[i, j] * od)`` (float32), so the cost is 9 lookups and a
    few products per pixel, on any BLAS alike.
    """
    if image_yxc.dtype != np.uint8 or image_yxc.ndim != 3 or image_yxc.shape[2] != 3:
        raise TypeError(f"expected a (y, x, 3) uint8 image, got {image_yxc.dtype} {image_yxc.shape}")
    transform, offset = jitter_transform(matrix, scale, shift)
    tables = np.exp(-_OD_LUT.astype(np.float64)[None, :, None] * transform[:, None, :]).astype(np.float32)
    gains = (256 * np.exp(-offset)).astype(np.float32)
    planes = [image_yxc[..., i] for i in range(3)]
    out = np.empty(image_yxc.shape, dtype=np.uint8)
    for j in range(3):
        values = tables[0, :, j][planes[0]]
        values *= tables[1, :, j][planes[1]]
        values *= tables[2, :, j][planes[2]]
        values *= gains[j]
        values -= 1
        np.clip(values, 0, 255, out=values)
        out[..., j] = np.rint(values)
    return out


# ------------------------------------------------------- Reinhard normalisation

METHODS = ("reinhard",)
MIN_TISSUE_PIXELS = 1000  # fewer tissue pixels in the sample: the slide is not normalised
MAX_STATS_PIXELS = 8_000_000  # pixels of the statistics level read per slide, at most
_BAND_ROWS = 16  # rows of one band of the sample (thin bands: more of them, spread over the slide)

# Reinhard et al. 2001: RGB -> LMS, and log10 LMS -> l alpha beta (decorrelated).
_RGB_TO_LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LOG_LMS_TO_LAB = np.diag([1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=np.float64
)
_LMS_TO_RGB = np.linalg.inv(_RGB_TO_LMS)
_LAB_TO_LOG_LMS = np.linalg.inv(_LOG_LMS_TO_LAB)


def _combine(planes: Sequence[np.ndarray], matrix: np.ndarray, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> list:
    """Return the planes ``sum_i matrix[j, i] * planes[i] + offset[j]`` for j = 0, 1, 2 (elementwise, no BLAS)."""
    dtype = planes[0].dtype.type
    out = []
    for j in range(3):
        plane = planes[0] * dtype(matrix[j, 0])
        plane += planes[1] * dtype(matrix[j, 1])
        plane += planes[2] * dtype(matrix[j, 2])
        plane += dtype(offset[j])
        out.append(plane)
    return out


def _log_lms(pixels: np.ndarray, dtype: type) -> list:
    """The planes of log10 LMS of uint8 RGB ``pixels`` (shape (..., 3)), through 256-entry tables."""
    tables = (_RGB_TO_LMS[:, :, None] * _FRACTION[None, None, :]).astype(dtype)  # [lms, rgb, value]
    channels = [pixels[..., i] for i in range(3)]
    planes = []
    for j in range(3):
        lms = tables[j, 0][channels[0]]
        lms += tables[j, 1][channels[1]]
        lms += tables[j, 2][channels[2]]
        planes.append(np.log10(lms, out=lms))
    return planes


def lab_from_rgb(pixels: np.ndarray) -> np.ndarray:
    """Return Reinhard's lαβ of uint8 RGB ``pixels`` (shape (..., 3)) as float64 (..., 3)."""
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise TypeError(f"expected uint8 RGB pixels, got {pixels.dtype} {pixels.shape}")
    return np.stack(_combine(_log_lms(pixels, np.float64), _LOG_LMS_TO_LAB), axis=-1)


def rgb_from_lab(lab: np.ndarray) -> np.ndarray:
    """Return the uint8 RGB pixels (rounded, clipped) of lαβ values ``lab`` (shape (..., 3)): the inverse of
    :func:`lab_from_rgb`."""
    log_lms = _combine([lab[..., k] for k in range(3)], _LAB_TO_LOG_LMS)
    return _rgb_from_log_lms(log_lms)


def _rgb_from_log_lms(planes: list) -> np.ndarray:
    """uint8 RGB (..., 3) of log10 LMS planes: ``rint(256 * rgb - 1)`` clipped to 0..255."""
    lms = [np.power(planes[0].dtype.type(10), plane) for plane in planes]
    rgb = _combine(lms, 256 * _LMS_TO_RGB, (-1.0, -1.0, -1.0))
    out = np.empty((*planes[0].shape, 3), dtype=np.uint8)
    for m, plane in enumerate(rgb):
        np.clip(plane, 0, 255, out=plane)
        out[..., m] = np.rint(plane)
    return out


@dataclass(frozen=True)
class LabStats:
    """lαβ statistics of a slide's tissue pixels: how many, their per-channel mean and standard deviation."""

    pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_sums(cls, pixels: int, total: np.ndarray, squares: np.ndarray) -> LabStats:
        """The statistics of ``pixels`` values whose per-channel sum is ``total`` and sum of squares ``squares``."""
        if pixels == 0:
            return cls(0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        mean = total / pixels
        std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
        return cls(int(pixels), tuple(float(v) for v in mean), tuple(float(v) for v in std))


def stats_downsample(tile_size: int, input_size: int, read_level: int | str) -> int:
    """The downsample of the pyramid level training reads ``tile_size`` tiles from for ``input_size`` inputs.

    ``2**read_level``, or for ``"auto"`` the largest power of two that keeps
    ``input_size`` pixels per tile side (:func:`tilepipe.data.preprocess.auto_level`
    of a deep enough pyramid): the scale slide statistics are measured at.
    """
    if read_level == "auto":
        return 2 ** auto_level(tile_size, input_size, n_levels=64)
    return 2 ** int(read_level)


def stats_level(n_levels: int, downsample: int) -> int:
    """The pyramid level of a ``downsample`` (a power of two), or the coarsest level there is."""
    return min(int(round(math.log2(downsample))), n_levels - 1)


def sample_bands(height: int, width: int, max_pixels: int = MAX_STATS_PIXELS) -> list[tuple[int, int]]:
    """The ``(y0, rows)`` row bands of a ``height`` x ``width`` image that statistics read.

    Bands of :data:`_BAND_ROWS` rows, evenly spaced (every k-th, from the
    first), as many as hold at most ``max_pixels`` pixels (at least one);
    all of them when the image is that small.
    """
    starts = list(range(0, height, _BAND_ROWS))
    keep = max(1, max_pixels // (_BAND_ROWS * max(width, 1)))
    step = max(1, math.ceil(len(starts) / keep))
    return [(y0, min(_BAND_ROWS, height - y0)) for y0 in starts[::step]]


def slide_lab_stats(
    store: SlideStore, saturation_threshold: int, downsample: int, max_pixels: int = MAX_STATS_PIXELS
) -> LabStats:
    """Return the lαβ statistics of the tissue pixels of ``store``, on the level of ``downsample``
    (:func:`stats_level`), in the row bands of :func:`sample_bands`.

    Tissue: HSV saturation (0..255) above ``saturation_threshold``. Sums
    are float64.
    """
    level = stats_level(len(store.levels), downsample)
    height, width = store.level_shape(level)
    pixels, total, squares = 0, np.zeros(3), np.zeros(3)
    for y0, rows in sample_bands(height, width, max_pixels):
        band = store.read_image(y0, 0, rows, width, level)
        tissue = band.transpose(1, 2, 0)[tissue_mask(band, saturation_threshold)]
        if tissue.size:
            lab = lab_from_rgb(tissue)
            pixels += len(lab)
            total += lab.sum(axis=0)
            squares += (lab**2).sum(axis=0)
    return LabStats.from_sums(pixels, total, squares)


def fit_reference(
    slide_stats: Mapping[str, LabStats],
    saturation_threshold: int,
    downsample: int,
    min_tissue_pixels: int = MIN_TISSUE_PIXELS,
) -> dict:
    """Return the Reinhard reference of the training slides whose statistics are ``slide_stats`` (by slide id),
    measured with ``saturation_threshold`` at ``downsample`` (:func:`slide_lab_stats`).

    The reference mean and standard deviation are the averages of the
    slides' own (each slide weighs the same) over the slides with at least
    ``min_tissue_pixels`` tissue pixels. Returns a JSON-able dict: what
    :func:`normalisation_settings` keeps for the checkpoint, plus
    ``slides`` (each slide's statistics and whether it counted). Raises
    InputError when no slide has enough tissue.
    """
    used = {s: st for s, st in sorted(slide_stats.items()) if st.pixels >= min_tissue_pixels}
    if not used:
        raise InputError(
            None,
            f"no training slide has {min_tissue_pixels} tissue pixels (saturation above {saturation_threshold}) "
            "to fit a stain reference on",
        )
    return {
        "method": "reinhard",
        "space": "lab_reinhard",
        "lab_mean": [float(v) for v in np.mean([st.mean for st in used.values()], axis=0)],
        "lab_std": [float(v) for v in np.mean([st.std for st in used.values()], axis=0)],
        "saturation_threshold": int(saturation_threshold),
        "stats_downsample": int(downsample),
        "min_tissue_pixels": int(min_tissue_pixels),
        "slides": {
            s: {"tissue_pixels": st.pixels, "lab_mean": list(st.mean), "lab_std": list(st.std), "used": s in used}
            for s, st in sorted(slide_stats.items())
        },
    }


_SETTINGS_KEYS = (
    "method",
    "space",
    "lab_mean",
    "lab_std",
    "saturation_threshold",
    "stats_downsample",
    "min_tissue_pixels",
)


def normalisation_settings(reference: Mapping) -> dict:
    """Return what inference needs of a reference (:func:`fit_reference`): the checkpoint geometry's ``stain``.

    Raises InputError (no path) when a key is missing or the method unknown.
    """
    missing = [k for k in _SETTINGS_KEYS if k not in reference]
    if missing:
        raise InputError(None, f"stain reference lacks {', '.join(missing)}")
    if reference["method"] not in METHODS:
        raise InputError(None, f"unknown stain normalisation {reference['method']!r}; expected {', '.join(METHODS)}")
    return {key: reference[key] for key in _SETTINGS_KEYS}


def write_reference(path: str | os.PathLike, reference: dict) -> None:
    """Write ``reference`` (:func:`fit_reference`) as JSON at ``path``, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")


def read_reference(path: str | os.PathLike) -> dict:
    """Return the reference written by :func:`write_reference`; InputError naming ``path`` if it is not one."""
    try:
        reference = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable stain reference ({err})") from err
    try:
        normalisation_settings(reference)
    except InputError as err:
        raise InputError(path, err.problem) from err
    return reference


@dataclass(frozen=True)
class ReinhardMap:
    """The per-channel affine map ``lab * scale + offset`` in lαβ that takes one slide's tissue to the reference.

    Glass is kept: the map is centred on the tissue's colours, so it can move
    neutral glass far (e.g. to a visible green). Each pixel is blended from
    itself (HSV saturation at most ``glass_saturation[0]``) to its mapped
    colour (at least ``glass_saturation[1]``), linearly in saturation.
    """

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    glass_saturation: tuple[float, float] = (15.0, 45.0)

    @classmethod
    def between(cls, source: LabStats, settings: Mapping) -> ReinhardMap:
        """The map from a slide with statistics ``source`` to the reference of ``settings``
        (:func:`normalisation_settings`); the identity when the slide has too little tissue.

        Glass is kept below half the tissue saturation threshold, fully mapped from 1.5 times it.
        """
        if source.pixels < settings["min_tissue_pixels"]:
            return cls()
        ref_mean, ref_std = settings["lab_mean"], settings["lab_std"]
        scale = [r / s if s > 0 else 1.0 for r, s in zip(ref_std, source.std, strict=True)]
        offset = [rm - sm * k for rm, sm, k in zip(ref_mean, source.mean, scale, strict=True)]
        threshold = float(settings["saturation_threshold"])
        return cls(tuple(float(v) for v in scale), tuple(float(v) for v in offset), (0.5 * threshold, 1.5 * threshold))

    @property
    def is_identity(self) -> bool:
        return self.scale == (1.0, 1.0, 1.0) and self.offset == (0.0, 0.0, 0.0)

    def apply(self, image_yxc: np.ndarray) -> np.ndarray:
        """Return ``image_yxc`` ((y, x, 3) uint8 RGB) mapped; the image itself when the map is the identity."""
        if self.is_identity:
            return image_yxc
        # lab = P @ log_lms, so the map is log_lms -> inv(P) @ (diag(scale) @ P @ log_lms + offset).
        matrix = _LAB_TO_LOG_LMS @ np.diag(self.scale) @ _LOG_LMS_TO_LAB
        offset = _LAB_TO_LOG_LMS @ np.asarray(self.offset)
        mapped = _rgb_from_log_lms(_combine(_log_lms(image_yxc, np.float32), matrix, offset))
        low, high = self.glass_saturation
        saturation = cv2.cvtColor(np.ascontiguousarray(image_yxc), cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        weight = np.clip((saturation - low) / max(high - low, 1e-6), 0, 1)[..., None]
        if np.all(weight == 1):
            return mapped
        blended = image_yxc + weight * (mapped.astype(np.float32) - image_yxc)
        return np.rint(blended).astype(np.uint8)


def slide_map(store: SlideStore, settings: Mapping) -> ReinhardMap:
    """The map of the slide ``store`` to the reference of ``settings`` (:func:`normalisation_settings`)."""
    source = slide_lab_stats(store, settings["saturation_threshold"], settings["stats_downsample"])
    return ReinhardMap.between(source, settings)
