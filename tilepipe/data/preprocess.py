"""Torch-free preprocessing shared by training and inference: pyramid level choice, resizing, normalisation.

Images are uint8 RGB; ``resize_image`` takes the stores' ``(c, y, x)`` and
returns ``(y, x, c)`` (what augmentations take), ``normalise`` turns
``(y, x, c)`` uint8 into the network's ``(c, y, x)`` float32.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def auto_level(tile_size: int, input_size: int, n_levels: int) -> int:
    """Return the coarsest pyramid level that still holds ``input_size`` pixels per tile side.

    That is the largest ``l < n_levels`` with ``tile_size / 2**l >= input_size``
    (0 if even level 0 has fewer), e.g. 1 for a 1024 px tile at 320 px.
    """
    level = 0
    while level + 1 < n_levels and tile_size / 2 ** (level + 1) >= input_size:
        level += 1
    return level


def resize_image(image_cyx: np.ndarray, size: int) -> np.ndarray:
    """Return a (c, y, x) uint8 image resized to (size, size, c) with ``cv2.INTER_AREA``.

    Resizes the channel planes one by one (no transposed copy of the large
    input) and interleaves the small results.
    """
    if image_cyx.shape[1:] == (size, size):
        return np.ascontiguousarray(image_cyx.transpose(1, 2, 0))
    return cv2.merge([cv2.resize(plane, (size, size), interpolation=cv2.INTER_AREA) for plane in image_cyx])


def resize_mask(mask_yx: np.ndarray, size: int) -> np.ndarray:
    """Return a (y, x) 0/1 uint8 mask resized to (size, size) uint8 0/1.

    A pixel is 1 when at least half of the area it covers is foreground:
    ``cv2.INTER_AREA`` of the mask scaled to 0/255, then >= 128 (127.5
    rounds to 128). When shrinking, only the rows and columns of whole
    resampling periods (``n / gcd(n, size)`` input pixels map onto
    ``size / gcd(n, size)`` output pixels) that hold foreground are
    resized; the result is the same as resizing the whole mask.
    """
    rows = np.flatnonzero(mask_yx.any(axis=1))
    if rows.size == 0:
        return np.zeros((size, size), dtype=np.uint8)
    height, width = mask_yx.shape
    if height < size or width < size:
        resized = cv2.resize(mask_yx * np.uint8(255), (size, size), interpolation=cv2.INTER_AREA)
        return (resized >= 128).view(np.uint8)
    cols = np.flatnonzero(mask_yx.any(axis=0))
    in_y, out_y = height // math.gcd(height, size), size // math.gcd(height, size)
    in_x, out_x = width // math.gcd(width, size), size // math.gcd(width, size)
    y0, y1 = rows[0] // in_y, rows[-1] // in_y + 1
    x0, x1 = cols[0] // in_x, cols[-1] // in_x + 1
    band = mask_yx[y0 * in_y : y1 * in_y, x0 * in_x : x1 * in_x] * np.uint8(255)
    resized = cv2.resize(band, ((x1 - x0) * out_x, (y1 - y0) * out_y), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), dtype=np.uint8)
    out[y0 * out_y : y1 * out_y, x0 * out_x : x1 * out_x] = resized >= 128
    return out


def normalisation(
    mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scale, offset)``, float32 per channel, that map uint8 pixels ``v`` to ``(v / 255 - mean) / std``."""
    std_array = np.asarray(std, dtype=np.float32)
    scale = (1 / (255 * std_array)).astype(np.float32)
    offset = (-np.asarray(mean, dtype=np.float32) / std_array).astype(np.float32)
    return scale, offset


def normalise(image_yxc: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Return ``image_yxc * scale + offset`` per channel as a (c, y, x) float32 array."""
    height, width, channels = image_yxc.shape
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        np.multiply(image_yxc[..., c], scale[c], out=out[c], dtype=np.float32)
        out[c] += offset[c]
    return out
