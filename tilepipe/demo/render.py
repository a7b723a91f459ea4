"""Rendering the embedded demo's slides: a synthetic PAS-stained kidney, its glomerulus polygons and true mask.

A slide is glass with one irregular tissue region (50-70 % of the slide):
pale pink interstitium packed with tubules (pink walls, magenta brush
border, pale lumen, dark nuclei), a few arterioles (thick muscular wall,
white lumen: round distractors) and glomeruli (a lobulated purple tuft
dense with nuclei and capillary lumens, a white Bowman's space and a thin
magenta capsule). The true mask is everything inside the capsule, as in
HuBMAP; it is the :func:`tilepipe.io.polygons.rasterize` of the capsule
polygons, so RLE and polygon slides mean exactly the same thing.
Deterministic in the seed and the slide's plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tilepipe.demo.plan import RENDER_STREAM, DemoSlide
from tilepipe.io.polygons import Polygon, rasterize

__all__ = ["RenderedSlide", "render_slide"]

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


@dataclass(frozen=True, eq=False)
class RenderedSlide:
    """A rendered slide: ``image`` (y, x, c) uint8 RGB; ``tissue`` (y, x) bool;
    ``polygons`` the glomerulus capsules in level-0 pixels; ``mask`` (y, x)
    uint8 0/1, their rasterization (the true mask)."""

    image: np.ndarray
    tissue: np.ndarray
    polygons: list[Polygon]
    mask: np.ndarray


def render_slide(slide: DemoSlide, seed: int) -> RenderedSlide:
    """Render ``slide``: image, tissue, glomerulus polygons and true mask (see :class:`RenderedSlide`).

    Deterministic in ``(seed, slide.index)``; whole-slide arrays (the demo is small).
    """
    rng = np.random.default_rng([seed, RENDER_STREAM, slide.index])
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
