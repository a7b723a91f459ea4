"""The embedded demo: a synthetic PAS-stained kidney dataset in the Kaggle layout.

Everything is a pure function of the settings and the seed, so two runs give
byte-identical files. Under a data root it writes the layout of Kaggle's
``hubmap-kidney-segmentation`` (DESIGN section 2)::

    train/{id}.tiff, train/{id}.json    every train slide has its polygons
    train.csv                            id,encoding: only label_source "rle" slides
    test/{id}.tiff, external/{id}.tiff
    sample_submission.csv                id,predicted (empty), in a fixed unsorted order
    HuBMAP-20-dataset_information.csv    one row per train and test slide

and, outside the data root, ``{truth_dir}/{id}.rle`` (the true mask of every
slide, one line) and a truth CSV of the test slides.

A slide is glass with one irregular tissue region (50-70 % of the slide):
pale pink interstitium packed with tubules (pink walls, magenta brush
border, pale lumen, dark nuclei), a few arterioles (thick muscular wall,
white lumen: round distractors) and glomeruli (a lobulated purple tuft
dense with nuclei and capillary lumens, a white Bowman's space and a thin
magenta capsule). The true mask is everything inside the capsule, as in
HuBMAP; it is the :func:`tilepipe.polygons.rasterize` of the capsule
polygons, so RLE and polygon slides mean exactly the same thing.

The slides are written in the TIFF layouts seen in the real data
(:data:`LAYOUTS`), so readers are tested on all of them.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import tifffile

from tilepipe.atomic import atomic_output
from tilepipe.errors import InputError
from tilepipe.polygons import Polygon, rasterize, write_polygons
from tilepipe.rle import encode

__all__ = [
    "DEFAULT_SETTINGS",
    "LAYOUTS",
    "UNLABELED_LAYOUTS",
    "DemoSlide",
    "RenderedSlide",
    "plan_demo",
    "render_slide",
    "write_tiff",
    "imread_shape",
    "demo_paths",
    "submission_order",
    "write_demo_slide",
    "write_demo_tables",
]

DEFAULT_SETTINGS: dict[str, Any] = {
    "train_patients": 4,  # >= 4 so that 4 patient-grouped folds work
    "slides_per_patient": 2,
    "test_slides": 2,  # each on a patient of its own
    "external_slides": 1,  # unlabeled, each on a patient of its own
    "height": 2560,  # px, varied by +-size_jitter per slide
    "width": 3072,  # px, varied by +-size_jitter per slide
    "glomerulus_diameter": [75, 240],  # px, min and max of the area-equivalent diameter
    "size_jitter": 0.1,  # relative spread of slide heights and widths
    "polygon_slides": 1,  # train slides labelled by polygons only (no train.csv row)
}

LAYOUTS = (
    "planar5d",  # imread -> (1, 1, 3, H, W): 5-D, planar separate, uncompressed, one strip per plane
    "planar3",  # imread -> (3, H, W): planar separate, LZW, 128-row strips
    "tiled_bigtiff",  # imread -> (H, W, 3): BigTIFF, 256 px tiles, zlib
    "pyramid_subifds",  # imread -> (H, W, 3): 256 px zlib tiles + 2 half-size levels as SubIFDs
    "jpeg_tiles",  # imread -> (H, W, 3): 256 px JPEG tiles (lossy)
    "single_strip",  # imread -> (H, W, 3): uncompressed, one strip for the whole image
    "lzw_strips",  # imread -> (H, W, 3): full-width 64-row LZW strips
)
# Test and external slides are drawn from the layouts that trip readers up most.
UNLABELED_LAYOUTS = ("planar5d", "pyramid_subifds", "single_strip", "jpeg_tiles")

_TILE = (256, 256)
_PYRAMID_LEVELS = 2  # reduced levels below level 0 in "pyramid_subifds"
_JPEG_QUALITY = 90

# Random streams: numpy's SeedSequence pads entropy with zeros, so [seed] and
# [seed, 0] would be the same stream; a stream tag in second place keeps them apart.
_PLAN_STREAM = 0
_RENDER_STREAM = 1
_DONOR_STREAM = 2
_CORTEX_STREAM = 3

_MEGAPIXELS_PER_GLOMERULUS = (0.3, 0.6)  # of tissue
_TISSUE_FRACTION = (0.5, 0.7)
_TUBULE_SPACING = (56.0, 70.0)  # px between tubule centres; tubules are ~40-120 px across
_ARTERIOLES_PER_GLOMERULUS = 0.5  # round distractors with a white lumen, 50-140 px across
_GRAIN_KERNEL, _GRAIN_SIGMA = 7, 1.0  # px, blur of the per-pixel stain grain
_SHIFT = 4  # fractional bits of the fixed-point coordinates given to cv2 drawing calls

# Label map of a rendered slide; colours are RGB before per-slide stain jitter.
_GLASS, _INTERSTITIUM, _WALL, _BRUSH, _LUMEN, _BOWMAN, _TUFT, _CAPSULE, _NUCLEUS, _CAPILLARY, _MEDIA = range(11)
_PALETTE = np.array(
    [
        (235, 235, 240),  # glass
        (232, 204, 222),  # interstitium
        (216, 152, 192),  # tubule wall (PAS-positive cytoplasm)
        (186, 86, 158),  # brush border / basement membrane
        (243, 229, 238),  # tubule lumen
        (245, 238, 243),  # Bowman's space
        (170, 92, 160),  # glomerular tuft (mesangium, basement membranes)
        (178, 80, 150),  # Bowman's capsule
        (92, 64, 138),  # nucleus (haematoxylin)
        (238, 212, 230),  # capillary lumen in the tuft
        (204, 124, 168),  # arteriole wall (smooth muscle)
    ],
    dtype=np.float32,
)
# Nuclei per pixel of each label (before dilation to ~5 px discs), and capillary lumens.
_NUCLEUS_DENSITY = np.array([0, 0.0015, 0.012, 0.004, 0, 0.0008, 0.022, 0.01, 0, 0, 0.018], dtype=np.float32)
_CAPILLARY_DENSITY = np.array([0, 0, 0, 0, 0, 0, 0.004, 0, 0, 0, 0], dtype=np.float32)

_INFO_COLUMNS = [
    "image_file",
    "width_pixels",
    "height_pixels",
    "anatomical_structures_segmention_file",
    "glomerulus_segmentation_file",
    "patient_number",
    "race",
    "ethnicity",
    "sex",
    "age",
    "weight_kilograms",
    "height_centimeters",
    "bmi_kg/m^2",
    "laterality",
    "percent_cortex",
    "percent_medulla",
]


@dataclass(frozen=True)
class DemoSlide:
    """One planned demo slide.

    ``id`` is 9 lowercase hex characters; ``split`` is "train", "test" or
    "external"; ``patient`` a 5-digit patient number; ``layout`` one of
    :data:`LAYOUTS`; ``label_source`` "rle" (a train.csv row), "polygons"
    (only train/{id}.json) or None (test, external). ``height`` and
    ``width`` are in pixels; ``glomerulus_diameter`` is the (min, max)
    area-equivalent glomerulus diameter in pixels; ``index`` is the slide's
    position in the plan, which seeds its rendering.
    """

    index: int
    id: str
    split: str
    patient: int
    layout: str
    label_source: str | None
    height: int
    width: int
    glomerulus_diameter: tuple[float, float]


@dataclass(frozen=True, eq=False)
class RenderedSlide:
    """A rendered slide: ``image`` (y, x, c) uint8 RGB; ``tissue`` (y, x) bool;
    ``polygons`` the glomerulus capsules in level-0 pixels; ``mask`` (y, x)
    uint8 0/1, their rasterization (the true mask)."""

    image: np.ndarray
    tissue: np.ndarray
    polygons: list[Polygon]
    mask: np.ndarray


# ---------------------------------------------------------------- planning


def plan_demo(settings: dict, seed: int) -> list[DemoSlide]:
    """Plan the demo dataset: train slides (patient by patient), then test, then external.

    ``settings`` holds keys of :data:`DEFAULT_SETTINGS` (missing ones take
    the default). Pure and cheap: no image work. Layouts go round-robin over
    a seeded order of :data:`LAYOUTS` for the train slides (so 7 or more
    train slides show every layout) and of :data:`UNLABELED_LAYOUTS` for
    the others. Every other slide has an odd height, every third an odd
    width. Raises :class:`InputError` for bad settings or seed.
    """
    s = _checked_settings(settings)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(None, f"seed: must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_train = s["train_patients"] * s["slides_per_patient"]
    n_other = s["test_slides"] + s["external_slides"]
    n_slides = n_train + n_other

    patients = rng.choice(np.arange(10000, 100000), size=s["train_patients"] + n_other, replace=False).tolist()
    train_layouts = [LAYOUTS[i] for i in rng.permutation(len(LAYOUTS))]
    other_layouts = [UNLABELED_LAYOUTS[i] for i in rng.permutation(len(UNLABELED_LAYOUTS))]
    polygon_slides = set(rng.choice(n_train, size=s["polygon_slides"], replace=False).tolist())
    jitter = s["size_jitter"]
    size_factors = rng.uniform(1 - jitter, 1 + jitter, size=(n_slides, 2))
    diameter = (float(s["glomerulus_diameter"][0]), float(s["glomerulus_diameter"][1]))

    slides = []
    for index, slide_id in enumerate(_slide_ids(seed, n_slides)):
        if index < n_train:
            split = "train"
            patient = patients[index // s["slides_per_patient"]]
            layout = train_layouts[index % len(train_layouts)]
            label_source = "polygons" if index in polygon_slides else "rle"
        else:
            other = index - n_train
            split = "test" if other < s["test_slides"] else "external"
            patient = patients[s["train_patients"] + other]
            layout = other_layouts[other % len(other_layouts)]
            label_source = None
        height = round(s["height"] * size_factors[index, 0])
        width = round(s["width"] * size_factors[index, 1])
        if index % 2 == 0:
            height |= 1  # odd sizes catch code that assumes even ones
        if index % 3 == 0:
            width |= 1
        slides.append(
            DemoSlide(index, slide_id, split, int(patient), layout, label_source, int(height), int(width), diameter)
        )
    return slides


def _slide_ids(seed: int, count: int) -> list[str]:
    """Return ``count`` unique 9-hex-character ids derived from ``seed``."""
    ids: list[str] = []
    attempt = 0
    while len(ids) < count:
        digest = hashlib.blake2b(f"tilepipe-demo/{seed}/{len(ids)}/{attempt}".encode(), digest_size=8).hexdigest()
        candidate = digest[:9]
        if candidate in ids:
            attempt += 1
            continue
        ids.append(candidate)
        attempt = 0
    return ids


def _checked_settings(settings: dict) -> dict:
    """Return ``settings`` over :data:`DEFAULT_SETTINGS`; raise InputError naming ``demo.<key>``."""
    if not isinstance(settings, dict):
        raise InputError(None, f"demo: settings must be a mapping, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise InputError(None, f"demo.{unknown[0]}: unknown setting (known: {', '.join(DEFAULT_SETTINGS)})")
    s = {**DEFAULT_SETTINGS, **settings}

    def integer(key: str, minimum: int) -> None:
        value = s[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InputError(None, f"demo.{key}: must be an integer >= {minimum}, got {value!r}")

    integer("train_patients", 1)
    integer("slides_per_patient", 1)
    integer("test_slides", 1)
    integer("external_slides", 0)
    integer("height", 64)
    integer("width", 64)
    integer("polygon_slides", 0)
    n_train = s["train_patients"] * s["slides_per_patient"]
    if s["polygon_slides"] > n_train:
        raise InputError(None, f"demo.polygon_slides: {s['polygon_slides']} exceeds the {n_train} train slides")
    jitter = s["size_jitter"]
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter <= 0.5:
        raise InputError(None, f"demo.size_jitter: must be a number in [0, 0.5], got {jitter!r}")
    diameter = s["glomerulus_diameter"]
    if (
        not isinstance(diameter, (list, tuple))
        or len(diameter) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in diameter)
        or not 0 < diameter[0] <= diameter[1]
    ):
        raise InputError(None, f"demo.glomerulus_diameter: must be [min, max] with 0 < min <= max, got {diameter!r}")
    smallest_side = math.floor(min(s["height"], s["width"]) * (1 - jitter))
    if 2 * diameter[1] > smallest_side:
        raise InputError(
            None,
            f"demo.glomerulus_diameter: max {diameter[1]} px is more than half the smallest slide side "
            f"({smallest_side} px); raise demo.height/width or lower the diameter",
        )
    return s


# ---------------------------------------------------------------- rendering


def render_slide(slide: DemoSlide, seed: int) -> RenderedSlide:
    """Render ``slide``: image, tissue, glomerulus polygons and true mask (see :class:`RenderedSlide`).

    Deterministic in ``(seed, slide.index)``; whole-slide arrays (the demo is small).
    """
    rng = np.random.default_rng([seed, _RENDER_STREAM, slide.index])
    shape = (slide.height, slide.width)
    tissue = _tissue(rng, shape)
    glomeruli = _place_glomeruli(rng, tissue, slide.glomerulus_diameter)
    polygons = [g.capsule for g in glomeruli]
    mask = rasterize(polygons, 0, shape[0], 0, shape[1])
    labels = _paint_labels(rng, tissue, mask, glomeruli)
    image = _colourize(rng, labels, tissue)
    return RenderedSlide(image=image, tissue=tissue, polygons=polygons, mask=mask)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Return a ``shape`` float32 field of smooth noise with features ~``cell`` px apart, std ~1."""
    h, w = shape
    grid = rng.standard_normal((max(2, round(h / cell)) + 2, max(2, round(w / cell)) + 2), dtype=np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _tissue(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Return a (y, x) bool mask of one irregular smooth-edged tissue region."""
    h, w = shape
    fraction = rng.uniform(*_TISSUE_FRACTION)
    scale = 8  # the field is built at 1/8 resolution and upsampled: smooth edges for free
    low = (math.ceil(h / scale), math.ceil(w / scale))
    field = _smooth_noise(rng, low, max(low) / 4) + 0.35 * _smooth_noise(rng, low, max(low) / 14)
    yy, xx = np.meshgrid(np.linspace(-1, 1, low[0]), np.linspace(-1, 1, low[1]), indexing="ij")
    cy, cx = rng.uniform(-0.15, 0.15, size=2)
    field -= 2.5 * ((yy - cy) ** 2 + (xx - cx) ** 2).astype(np.float32)
    threshold = np.quantile(field, 1 - fraction)
    return cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR) > threshold


def _ring(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(theta, radius)`` of a noisy unit ellipse sampled at ``n`` sorted angles."""
    theta = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
    aspect = rng.uniform(0.75, 1.0)
    t = theta - rng.uniform(0, np.pi)
    radius = aspect / np.sqrt((aspect * np.cos(t)) ** 2 + np.sin(t) ** 2)
    harmonics = np.arange(2, 6)
    wobble = rng.uniform(0, 0.04, harmonics.size) * np.cos(
        harmonics * theta[:, None] + rng.uniform(0, 2 * np.pi, harmonics.size)
    )
    radius = radius * (1 + wobble.sum(axis=1) + rng.normal(0, 0.01, n))
    return theta, radius


@dataclass(frozen=True, eq=False)
class _Glomerulus:
    """A placed glomerulus: ``capsule`` polygon (the true mask), ``tuft`` ring
    (n, 2) float (x, y), ``centre`` (x, y) and ``clearance``, the radius of
    its tubule-free zone; all in pixels."""

    capsule: Polygon
    tuft: np.ndarray
    centre: tuple[float, float]
    clearance: float


def _place_glomeruli(rng: np.random.Generator, tissue: np.ndarray, diameter: tuple[float, float]) -> list[_Glomerulus]:
    """Place non-overlapping glomeruli, with their tubule-free zones, inside the tissue.

    Each capsule's area-equivalent diameter is drawn in ``diameter`` (px,
    beta(2, 2): median at the middle of the range); one glomerulus per
    0.3-0.6 megapixel of tissue, fewer if they do not fit.
    """
    h, w = tissue.shape
    tissue_px = int(np.count_nonzero(tissue))
    count = max(1, round(tissue_px / (rng.uniform(*_MEGAPIXELS_PER_GLOMERULUS) * 1e6)))
    inland = cv2.distanceTransform(tissue.astype(np.uint8), cv2.DIST_L2, 5)
    diameters = np.sort(diameter[0] + (diameter[1] - diameter[0]) * rng.beta(2, 2, count))[::-1]
    placed: list[_Glomerulus] = []
    for d in diameters:
        theta, radius = _ring(rng, int(rng.integers(32, 65)))
        unit = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
        scale = (d / 2) / math.sqrt(_area(unit) / math.pi)
        clearance = 1.15 * scale * float(radius.max()) + 4
        xs = rng.uniform(0, w, 400)
        ys = rng.uniform(0, h, 400)
        ok = inland[ys.astype(int), xs.astype(int)] >= clearance + 4
        for other in placed:
            ok &= np.hypot(xs - other.centre[0], ys - other.centre[1]) >= other.clearance + clearance + 10
        hits = np.flatnonzero(ok)
        if hits.size == 0:
            continue
        centre = (float(xs[hits[0]]), float(ys[hits[0]]))
        capsule = Polygon(np.round(unit * scale + centre, 2))
        placed.append(_Glomerulus(capsule, _tuft(rng, theta, radius * scale, centre), centre, clearance))
    return placed


def _tuft(rng: np.random.Generator, theta: np.ndarray, radius: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Return a lobulated tuft ring (n, 2) (x, y) inside a capsule of polar ``(theta, radius)`` px about ``centre``."""
    n = 128
    angles = np.arange(n) * (2 * np.pi / n)
    capsule_radius = np.interp(angles, theta, radius, period=2 * np.pi)
    lobes = np.arange(5, 10)
    lobulation = rng.uniform(0.02, 0.06, lobes.size) * np.cos(
        lobes * angles[:, None] + rng.uniform(0, 2 * np.pi, lobes.size)
    )
    tuft_radius = capsule_radius * rng.uniform(0.78, 0.88) * (1 + lobulation.sum(axis=1))
    shift = rng.uniform(0.03, 0.09) * capsule_radius.mean()
    direction = rng.uniform(0, 2 * np.pi)
    x = centre[0] + shift * np.cos(direction) + tuft_radius * np.cos(angles)
    y = centre[1] + shift * np.sin(direction) + tuft_radius * np.sin(angles)
    return np.stack([x, y], axis=1)


def _area(ring: np.ndarray) -> float:
    """Shoelace area of a ring (n, 2) in square pixels."""
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _fixed(ring: np.ndarray) -> np.ndarray:
    """Ring (n, 2) float (x, y) px as cv2 fixed-point int32 with ``_SHIFT`` bits."""
    return np.round(ring * (1 << _SHIFT)).astype(np.int32)


def _paint_labels(
    rng: np.random.Generator,
    tissue: np.ndarray,
    mask: np.ndarray,
    glomeruli: list[_Glomerulus],
) -> np.ndarray:
    """Return the (y, x) uint8 label map (``_GLASS`` ... ``_MEDIA``) of a slide."""
    h, w = tissue.shape
    labels = np.where(tissue, _INTERSTITIUM, _GLASS).astype(np.uint8)
    _paint_tubules(rng, labels, tissue, glomeruli)
    _paint_arterioles(rng, labels, tissue, glomeruli)
    labels[mask == 1] = _BOWMAN
    tufts = np.zeros((h, w), dtype=np.uint8)
    for glomerulus in glomeruli:
        cv2.fillPoly(tufts, [_fixed(glomerulus.tuft)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    labels[(tufts & inner) == 1] = _TUFT
    cv2.polylines(labels, [_fixed(g.capsule.exterior) for g in glomeruli], True, _CAPSULE, thickness=2, shift=_SHIFT)
    labels[~tissue] = _GLASS

    draw = rng.random((h, w), dtype=np.float32)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    capillaries = cv2.dilate((draw > 1 - _CAPILLARY_DENSITY[labels]).astype(np.uint8), disc)
    labels[(capillaries == 1) & (labels == _TUFT)] = _CAPILLARY
    nuclei = cv2.dilate((draw < _NUCLEUS_DENSITY[labels]).astype(np.uint8), disc)
    labels[(nuclei == 1) & tissue] = _NUCLEUS
    return labels


def _paint_tubules(
    rng: np.random.Generator,
    labels: np.ndarray,
    tissue: np.ndarray,
    glomeruli: list[_Glomerulus],
) -> None:
    """Draw tubule cross-sections (wall, brush border, lumen) into ``labels`` on a jittered grid."""
    h, w = tissue.shape
    spacing = rng.uniform(*_TUBULE_SPACING)
    gy, gx = np.meshgrid(np.arange(spacing / 2, h, spacing), np.arange(spacing / 2, w, spacing), indexing="ij")
    ys = (gy.ravel() + rng.uniform(-0.3, 0.3, gy.size) * spacing).clip(0, h - 1)
    xs = (gx.ravel() + rng.uniform(-0.3, 0.3, gx.size) * spacing).clip(0, w - 1)
    n = ys.size
    semi_major = spacing * rng.uniform(0.4, 0.62, n)
    elongated = rng.random(n) < 0.15
    semi_major = np.where(elongated, semi_major * 1.5, semi_major)
    semi_minor = semi_major * np.where(elongated, rng.uniform(0.35, 0.55, n), rng.uniform(0.7, 1.0, n))
    angle = rng.uniform(0, 180, n)
    lumen = rng.uniform(0.25, 0.6, n)
    keep = tissue[ys.astype(int), xs.astype(int)]
    for glomerulus in glomeruli:
        cx, cy = glomerulus.centre
        keep &= np.hypot(xs - cx, ys - cy) >= glomerulus.clearance + 0.3 * semi_major
    for i in np.flatnonzero(keep):
        centre = (int(xs[i]), int(ys[i]))
        outer = (int(semi_major[i]), int(semi_minor[i]))
        inner = (max(1, int(semi_major[i] * lumen[i])), max(1, int(semi_minor[i] * lumen[i])))
        cv2.ellipse(labels, centre, outer, angle[i], 0, 360, _WALL, -1)
        cv2.ellipse(labels, centre, (inner[0] + 2, inner[1] + 2), angle[i], 0, 360, _BRUSH, -1)
        cv2.ellipse(labels, centre, inner, angle[i], 0, 360, _LUMEN, -1)


def _paint_arterioles(
    rng: np.random.Generator,
    labels: np.ndarray,
    tissue: np.ndarray,
    glomeruli: list[_Glomerulus],
) -> None:
    """Draw arteriole cross-sections (thick muscular wall, white lumen) into ``labels``, clear of glomeruli."""
    h, w = tissue.shape
    count = math.ceil(_ARTERIOLES_PER_GLOMERULUS * max(1, len(glomeruli)))
    candidates = 20 * count  # the first ``count`` that land in tissue, clear of glomeruli, are drawn
    radius = rng.uniform(25, 70, candidates)
    xs = rng.uniform(0, w, candidates)
    ys = rng.uniform(0, h, candidates)
    keep = tissue[ys.astype(int), xs.astype(int)]
    for glomerulus in glomeruli:
        cx, cy = glomerulus.centre
        keep &= np.hypot(xs - cx, ys - cy) >= glomerulus.clearance + radius
    lumen = rng.uniform(0.35, 0.55, candidates)
    aspect = rng.uniform(0.75, 1.0, candidates)
    angle = rng.uniform(0, 180, candidates)
    for i in np.flatnonzero(keep)[:count]:
        centre = (int(xs[i]), int(ys[i]))
        outer = (int(radius[i]), int(radius[i] * aspect[i]))
        inner = (max(1, int(outer[0] * lumen[i])), max(1, int(outer[1] * lumen[i])))
        cv2.ellipse(labels, centre, (outer[0] + 3, outer[1] + 3), angle[i], 0, 360, _INTERSTITIUM, -1)
        cv2.ellipse(labels, centre, outer, angle[i], 0, 360, _MEDIA, -1)
        cv2.ellipse(labels, centre, (inner[0] + 2, inner[1] + 2), angle[i], 0, 360, _BRUSH, -1)
        cv2.ellipse(labels, centre, inner, angle[i], 0, 360, _LUMEN, -1)


def _colourize(rng: np.random.Generator, labels: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Return the (y, x, c) uint8 RGB image of a label map, with stain jitter, grain and shading."""
    h, w = labels.shape
    palette = _PALETTE.copy()
    palette[1:] *= rng.uniform(0.94, 1.04, 3).astype(np.float32)  # per-slide stain strength
    lut = np.zeros((256, 1, 3), dtype=np.uint8)
    lut[: len(palette), 0] = np.clip(np.rint(palette), 0, 255)
    image = cv2.GaussianBlur(cv2.LUT(cv2.merge([labels, labels, labels]), lut), (0, 0), 0.8)
    # Blurred uniform noise, scaled to unit standard deviation: a fine stain grain.
    kernel = cv2.getGaussianKernel(_GRAIN_KERNEL, _GRAIN_SIGMA)
    grain = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (_GRAIN_KERNEL, _GRAIN_KERNEL), _GRAIN_SIGMA)
    grain -= 0.5
    grain *= math.sqrt(12) / float((kernel**2).sum())
    shading = _smooth_noise(rng, (h, w), 300.0)
    in_tissue = tissue.astype(np.float32)
    texture = 1 + 0.01 * grain + in_tissue * (0.04 * grain + 0.04 * shading)
    return cv2.multiply(image, cv2.merge([texture, texture, texture]), dtype=cv2.CV_8U)


# ---------------------------------------------------------------- writing


def imread_shape(layout: str, height: int, width: int) -> tuple[int, ...]:
    """Return the array shape ``tifffile.imread`` gives for an RGB slide written in ``layout``."""
    if layout == "planar5d":
        return (1, 1, 3, height, width)
    if layout == "planar3":
        return (3, height, width)
    if layout in LAYOUTS:
        return (height, width, 3)
    raise ValueError(f"unknown layout {layout!r}")


def write_tiff(path: str | os.PathLike, image: np.ndarray, layout: str) -> None:
    """Write ``image`` ((y, x, c) uint8 RGB) to ``path`` in ``layout`` (one of :data:`LAYOUTS`), atomically."""
    height = image.shape[0]
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))
    rgb: dict[str, Any] = {"photometric": "rgb"}
    tiled = {**rgb, "tile": _TILE, "compression": "zlib"}
    with atomic_output(path) as tmp:
        if layout == "planar5d":
            tifffile.imwrite(tmp, planar[None, None], planarconfig="separate", **rgb)
        elif layout == "planar3":
            tifffile.imwrite(tmp, planar, planarconfig="separate", compression="lzw", rowsperstrip=128, **rgb)
        elif layout == "tiled_bigtiff":
            tifffile.imwrite(tmp, image, bigtiff=True, **tiled)
        elif layout == "pyramid_subifds":
            with tifffile.TiffWriter(tmp) as tif:
                tif.write(image, subifds=_PYRAMID_LEVELS, **tiled)
                level = image
                for _ in range(_PYRAMID_LEVELS):
                    size = ((level.shape[1] + 1) // 2, (level.shape[0] + 1) // 2)
                    level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
                    tif.write(level, subfiletype=1, **tiled)
        elif layout == "jpeg_tiles":
            tifffile.imwrite(
                tmp, image, tile=_TILE, compression="jpeg", compressionargs={"level": _JPEG_QUALITY}, **rgb
            )
        elif layout == "single_strip":
            tifffile.imwrite(tmp, image, rowsperstrip=height, **rgb)
        elif layout == "lzw_strips":
            tifffile.imwrite(tmp, image, compression="lzw", rowsperstrip=64, **rgb)
        else:
            raise ValueError(f"unknown layout {layout!r}")


def demo_paths(slide: DemoSlide, data_root: str | os.PathLike, truth_dir: str | os.PathLike) -> dict[str, Path]:
    """Return the files :func:`write_demo_slide` writes: "tiff", "truth" and, for train slides, "polygons"."""
    folder = Path(data_root) / slide.split
    paths = {"tiff": folder / f"{slide.id}.tiff", "truth": Path(truth_dir) / f"{slide.id}.rle"}
    if slide.split == "train":
        paths["polygons"] = folder / f"{slide.id}.json"
    return paths


def write_demo_slide(slide: DemoSlide, data_root: str | os.PathLike, truth_dir: str | os.PathLike, seed: int) -> None:
    """Render ``slide`` and write its TIFF, its polygons (train slides) and ``{truth_dir}/{id}.rle``.

    The RLE file holds the Kaggle RLE of the true mask on one line. Every
    file appears atomically.
    """
    paths = demo_paths(slide, data_root, truth_dir)
    rendered = render_slide(slide, seed)
    write_tiff(paths["tiff"], rendered.image, slide.layout)
    if "polygons" in paths:
        write_polygons(paths["polygons"], rendered.polygons)
    with atomic_output(paths["truth"]) as tmp:
        tmp.write_text(encode(rendered.mask) + "\n")


def submission_order(slides: Iterable[DemoSlide]) -> list[DemoSlide]:
    """Return the test slides in sample_submission order: plan order, never sorted by id.

    Plan order is unrelated to id order; if it happens to be sorted it is
    rotated by one, so code that sorts ids is caught.
    """
    tests = [s for s in slides if s.split == "test"]
    if len(tests) > 1 and [s.id for s in tests] == sorted(s.id for s in tests):
        tests = tests[1:] + tests[:1]
    return tests


def write_demo_tables(
    slides: Iterable[DemoSlide],
    data_root: str | os.PathLike,
    truth_dir: str | os.PathLike,
    truth_csv: str | os.PathLike,
) -> None:
    """Write train.csv, sample_submission.csv and HuBMAP-20-dataset_information.csv under
    ``data_root``, and ``truth_csv`` (id,predicted of the test slides in submission order).

    Reads the RLEs from ``{truth_dir}/{id}.rle``, written by :func:`write_demo_slide`.
    """
    slides = list(slides)
    data_root = Path(data_root)

    def truth(slide: DemoSlide) -> str:
        return (Path(truth_dir) / f"{slide.id}.rle").read_text().strip()

    rle_slides = sorted((s for s in slides if s.label_source == "rle"), key=lambda s: s.id)
    _write_csv(data_root / "train.csv", ["id", "encoding"], [[s.id, truth(s)] for s in rle_slides])
    tests = submission_order(slides)
    _write_csv(data_root / "sample_submission.csv", ["id", "predicted"], [[s.id, ""] for s in tests])
    _write_csv(truth_csv, ["id", "predicted"], [[s.id, truth(s)] for s in tests])
    described = [s for s in slides if s.split in ("train", "test")]
    _write_csv(data_root / "HuBMAP-20-dataset_information.csv", _INFO_COLUMNS, [_info_row(s) for s in described])


def _info_row(slide: DemoSlide) -> list[Any]:
    """One row of the dataset information table; donor facts are a pure function of the patient."""
    donor = np.random.default_rng([slide.patient, _DONOR_STREAM])
    weight = round(float(donor.uniform(55, 120)), 1)
    height_cm = round(float(donor.uniform(150, 195)), 1)
    race = ["White", "Black or African American", "Asian"][int(donor.integers(3))]
    ethnicity = ["Not Hispanic or Latino", "Hispanic or Latino"][int(donor.random() < 0.15)]
    sex = ["Male", "Female"][int(donor.integers(2))]
    age = int(donor.integers(25, 80))
    laterality = ["Left", "Right"][int(donor.integers(2))]
    cortex = int(np.random.default_rng([slide.patient, _CORTEX_STREAM, slide.index]).integers(55, 101))
    return [
        f"{slide.id}.tiff",
        slide.width,
        slide.height,
        "",
        f"{slide.id}.json" if slide.split == "train" else "",
        slide.patient,
        race,
        ethnicity,
        sex,
        age,
        weight,
        height_cm,
        round(weight / (height_cm / 100) ** 2, 1),
        laterality,
        cortex,
        100 - cortex,
    ]


def _write_csv(path: str | os.PathLike, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
