"""Band-by-band components equal whole-image components, whatever the band height."""

import cv2
import numpy as np
import pytest

from tilepipe.objects.components import find_objects, object_mask


def reference(values: np.ndarray, cutoff: int, extra: np.ndarray, extra_cutoff: int) -> list[tuple]:
    """Whole-image 8-connected components: (y0, x0, y1, x1, area, value sum, extra sum, extra count at
    ``extra_cutoff``), sorted by (y0, x0)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((values >= cutoff).astype(np.uint8), connectivity=8)
    rows = []
    for label in range(1, n):
        x, y, w, h, area = stats[label]
        inside = labels == label
        high = int((extra[inside] >= extra_cutoff).sum())
        rows.append((y, x, y + h, x + w, area, int(values[inside].sum()), int(extra[inside].sum()), high))
    return sorted(rows, key=lambda r: (r[0], r[1]))


def blobs(shape, seed, count=40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.zeros(shape, np.uint8)
    for _ in range(count):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(2, 40)), int(rng.integers(2, 40)))
        cv2.ellipse(values, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(100, 256)), -1)
    values[rng.random(shape) < 0.01] = 200  # specks, some touching blobs diagonally
    cv2.circle(values, (shape[1] // 2, shape[0] // 2), 15, 0, -1)  # a hole inside whatever is there
    return values, rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("band_rows", [1, 7, 64, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_bands_give_the_whole_image_components(band_rows, seed):
    values, extra = blobs((300, 410), seed)
    found = find_objects(values, 128, extra=extra, extra_cutoff=200, band_rows=band_rows)
    got = [
        (*map(int, found.box[i]), int(found.area[i]), int(found.value_sum[i]), int(found.extra_sum[i]))
        + (int(found.extra_high[i]),)
        for i in range(len(found))
    ]
    assert got == reference(values, 128, extra, 200)


def test_an_object_crossing_many_bands_is_one_object_and_its_seed_recovers_it():
    values = np.zeros((200, 60), np.uint8)
    values[5:195, 30] = 255  # a one-pixel-wide line, diagonal steps at band edges
    values[100, 31] = 255
    values[101:150, 32] = 255
    values[150, 31] = 255
    found = find_objects(values, 128, band_rows=3, min_area=2)
    assert len(found) == 1
    assert found.area[0] == (values > 0).sum()
    mask = object_mask(values, 128, found.box[0], found.seed[0])
    y0, x0, y1, x1 = found.box[0]
    assert np.array_equal(mask, (values[y0:y1, x0:x1] > 0).astype(np.uint8))


def test_min_area_drops_specks_and_object_mask_excludes_intruders():
    values = np.zeros((50, 50), np.uint8)
    values[10:30, 10:30] = 255
    values[12:14, 12:14] = 0
    values[20:22, 20:22] = 0
    values[40, 40] = 255  # a speck
    values[28:35, 31:33] = 255  # another object inside the first one's box? no: to its right, touching diagonally
    values[29, 30] = 0
    found = find_objects(values, 128, min_area=4)
    assert int((found.area >= 4).sum()) == len(found)
    assert all(tuple(b) != (40, 40, 41, 41) for b in found.box)
    for i in range(len(found)):
        mask = object_mask(values, 128, found.box[i], found.seed[i])
        assert mask.sum() == found.area[i]


def test_no_foreground_gives_no_objects():
    assert len(find_objects(np.zeros((10, 10), np.uint8), 128)) == 0
