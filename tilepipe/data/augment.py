"""Training augmentations: an albumentations pipeline built from YAML-able specs.

A spec is a list of dicts, one per transform: ``name`` is an albumentations
transform class and every other key is one of its arguments (albumentations
2.0.8 names), e.g. ``[{"name": "HorizontalFlip", "p": 0.5}]``. Lists stand
for tuples, so a spec survives a round trip through YAML.
"""

from __future__ import annotations

import inspect
import random

import albumentations as A
import numpy as np

from tilepipe.errors import InputError

__all__ = ["LIGHT_AUGMENTATIONS", "PRESETS", "RECIPE_AUGMENTATIONS", "build_augmentations", "reseed"]

# The 1st-place recipe (DESIGN section 4), written with albumentations 2.0.8
# arguments. Its albumentations 0.x arguments and their translation:
# - ShiftScaleRotate(shift 0, scale +-0.2, rotate +-30, border 0) is Affine
#   (ShiftScaleRotate is a deprecated alias of it in 2.x);
# - GaussNoise(var_limit=(0, 50)) on uint8: std up to sqrt(50) = 7.07 gray
#   levels, i.e. 7.07 / 255 of the maximum;
# - GaussianBlur(blur_limit=(3, 7), sigma 0): OpenCV derives sigma 0.8..1.4
#   from kernels 3..7; 2.x needs the sigma range explicitly;
# - CoarseDropout(1-2 holes, 20-80 px at 320 px input): fractions 1/16..1/4
#   of the input side, so the holes scale with the input size.
RECIPE_AUGMENTATIONS: list[dict] = [
    {"name": "RandomRotate90", "p": 1.0},
    {"name": "HorizontalFlip", "p": 0.5},
    {
        "name": "Affine",
        "scale": [0.8, 1.2],
        "rotate": [-30, 30],
        "interpolation": 1,  # cv2.INTER_LINEAR
        "border_mode": 0,  # cv2.BORDER_CONSTANT
        "fill": 0,
        "fill_mask": 0,
        "p": 0.5,
    },
    {"name": "GaussNoise", "std_range": [0.0, 0.0277], "mean_range": [0.0, 0.0], "p": 0.5},
    {"name": "GaussianBlur", "blur_limit": [3, 7], "sigma_limit": [0.8, 1.4], "p": 0.5},
    {
        "name": "RandomBrightnessContrast",
        "brightness_limit": 0.35,
        "contrast_limit": 0.5,
        "brightness_by_max": True,
        "p": 0.5,
    },
    {"name": "HueSaturationValue", "hue_shift_limit": 30, "sat_shift_limit": 30, "val_shift_limit": 0, "p": 0.5},
    {
        "name": "CoarseDropout",
        "num_holes_range": [1, 2],
        "hole_height_range": [0.0625, 0.25],
        "hole_width_range": [0.0625, 0.25],
        "fill": 0,
        "fill_mask": 0,
        "p": 0.5,
    },
]


# The demo's pipeline: the recipe's geometry (milder scaling) and a mild
# brightness/contrast jitter. At the demo's 64 px input the recipe's blur
# (3-7 px kernels), noise, hue shifts and dropout holes erase most of what
# a glomerulus looks like, and the demo's few hundred steps do not learn
# through them (val Dice 0.0 after 10 epochs vs 0.85 after 8 without them).
LIGHT_AUGMENTATIONS: list[dict] = [
    {"name": "RandomRotate90", "p": 1.0},
    {"name": "HorizontalFlip", "p": 0.5},
    {**next(t for t in RECIPE_AUGMENTATIONS if t["name"] == "Affine"), "scale": [0.9, 1.1]},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
]

# Names ``train.augmentations`` may give instead of a list.
PRESETS: dict[str, list[dict]] = {"recipe": RECIPE_AUGMENTATIONS, "light": LIGHT_AUGMENTATIONS}


def build_augmentations(spec: list[dict], seed: int | None = None) -> A.Compose:
    """Return an ``albumentations.Compose`` of the transforms in ``spec``, in order.

    The pipeline takes ``image`` ((y, x, c) uint8) and ``mask`` ((y, x)
    uint8) and skips albumentations' per-call shape checks. ``seed`` (if
    not None) fixes its random state as :func:`reseed` does.

    Raises InputError (no path; the problem names ``train.augmentations[i]``)
    for an entry that is not a dict with a ``name``, an unknown transform
    name, an argument the transform does not take, or a value it rejects.
    """
    if not isinstance(spec, list):
        raise InputError(None, f"train.augmentations: expected a list of transforms, got {type(spec).__name__}")
    transforms = [build_transform(entry, f"train.augmentations[{i}]") for i, entry in enumerate(spec)]
    augment = A.Compose(transforms, is_check_shapes=False)
    if seed is not None:
        reseed(augment, seed)
    return augment


def build_transform(entry: dict, where: str) -> A.BasicTransform:
    """Return the albumentations transform described by one spec ``entry``.

    ``where`` names the entry in error messages. Raises InputError as
    :func:`build_augmentations` describes.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InputError(None, f"{where}: expected a mapping with a 'name', got {entry!r}")
    name = entry["name"]
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        raise InputError(None, f"{where}: unknown augmentation {name!r} (not an albumentations transform)")
    kwargs = {key: value for key, value in entry.items() if key != "name"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InputError(
            None, f"{where}: {name} takes no argument(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
        )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise InputError(None, f"{where}: bad arguments for {name}: {err}") from err


def reseed(augment: A.Compose, seed: int) -> None:
    """Give ``augment`` (and every transform in it) one random state derived from ``seed``.

    All transforms share the state, so they draw in sequence. (Albumentations
    2.0.8's ``Compose(seed=...)`` / ``set_random_seed`` seed every transform
    alike instead, so all their first coin flips come out the same.)
    """
    augment.set_random_state(np.random.default_rng(seed), random.Random(seed))
