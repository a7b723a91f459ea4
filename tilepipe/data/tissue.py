"""Tissue: the pixels of a slide that are not glass, told apart by their HSV saturation.

Tissue is HSV saturation (OpenCV's, 0..255) above a threshold, the config's
``tiles.saturation_threshold``. Glass and white background stay below ~15
(tinted glass (236, 232, 240): 8); stained tissue lies far above (pink
(215, 140, 185): 89). The tile index and inference's tissue skip both
measure it here, on a low pyramid level.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["tissue_mask"]


def tissue_mask(image_cyx: np.ndarray, saturation_threshold: int) -> np.ndarray:
    """Return a (y, x) bool mask of the pixels of ``image_cyx`` ((c, y, x) uint8 RGB) that are tissue."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image_cyx.transpose(1, 2, 0)), cv2.COLOR_RGB2HSV)
    return hsv[..., 1] > saturation_threshold
