"""The embedded demo's plan: which slides it has (ids, splits, patients, TIFF layouts, sizes).

Pure and cheap (numpy only, no image work): the Snakefile imports it at
parse time to know the slide ids. Everything is a pure function of the
``demo`` config section and the seed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from tilepipe.config import resolve
from tilepipe.errors import InputError

__all__ = ["LAYOUTS", "UNLABELED_LAYOUTS", "DemoSlide", "plan_demo"]


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


# Random streams: numpy's SeedSequence pads entropy with zeros, so [seed] and
# [seed, 0] would be the same stream; a stream tag in second place keeps them apart.
PLAN_STREAM = 0


RENDER_STREAM = 1


DONOR_STREAM = 2


CORTEX_STREAM = 3


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


def plan_demo(settings: dict, seed: int) -> list[DemoSlide]:
    """Plan the demo dataset: train slides (patient by patient), then test, then external.

    ``settings`` is the ``demo`` config section (missing keys take the
    schema's defaults). Pure and cheap: no image work. Layouts go round-robin over
    a seeded order of :data:`LAYOUTS` for the train slides (so 7 or more
    train slides show every layout) and of :data:`UNLABELED_LAYOUTS` for
    the others. Every other slide has an odd height, every third an odd
    width. Raises :class:`InputError` for bad settings or seed.
    """
    s = _checked_settings(settings)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(None, f"seed: must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, PLAN_STREAM])
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
    """Return ``settings`` completed with the schema's ``demo`` defaults; raise InputError naming ``demo.<key>``."""
    if not isinstance(settings, dict):
        raise InputError(None, f"demo: settings must be a mapping, got {type(settings).__name__}")
    s = resolve({"demo": settings})["demo"]
    n_train = s["train_patients"] * s["slides_per_patient"]
    if s["polygon_slides"] > n_train:
        raise InputError(None, f"demo.polygon_slides: {s['polygon_slides']} exceeds the {n_train} train slides")
    jitter, diameter = s["size_jitter"], s["glomerulus_diameter"]
    if diameter[0] > diameter[1]:
        raise InputError(None, f"demo.glomerulus_diameter: must be [min, max] with min <= max, got {diameter!r}")
    smallest_side = math.floor(min(s["height"], s["width"]) * (1 - jitter))
    if 2 * diameter[1] > smallest_side:
        raise InputError(
            None,
            f"demo.glomerulus_diameter: max {diameter[1]} px is more than half the smallest slide side "
            f"({smallest_side} px); raise demo.height/width or lower the diameter",
        )
    return s
