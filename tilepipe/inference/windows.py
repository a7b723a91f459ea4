"""Centre-crop window geometry of whole-slide inference (pure functions, level-0 pixels).

The slide is cut into *kept centres*: squares of side ``keep`` whose origins
are ``0, keep, 2 keep, ...`` in y and x, the last ones in each direction
clipped at the slide's border, so every pixel lies in exactly one centre.
Each centre is predicted from the ``tile_size`` window around it, whose
origin is the centre's origin minus ``margin = (tile_size - keep) // 2``:
windows overlap by ``tile_size - keep`` and the first ones start above and
left of the slide (negative origins; the image there reads as zeros). A
slide smaller than one window is one centre, the slide itself.

With the recipe's 1024 px windows and 512 px centres, window origins are
``-256, 256, 768, ...``: every prediction keeps only pixels at least 256 px
from its window's edges (where a network has seen little context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tilepipe.data.preprocess import auto_level
from tilepipe.errors import InputError

__all__ = ["CentreGrid", "Window", "centre_grid", "choose_read_level", "choose_tissue_level"]

# Pixels per kept-centre side at the level tissue is measured on: the tile index's ~32 per tile side.
TISSUE_PIXELS_PER_CENTRE_SIDE = 32


@dataclass(frozen=True)
class Window:
    """One window and the centre it keeps, in level-0 pixels.

    ``y``, ``x``: window origin (may be negative); the window is
    ``tile_size`` square. ``centre_y``, ``centre_x``, ``centre_height``,
    ``centre_width``: the kept centre, inside the slide, at offset
    ``(margin, margin)`` within the window.
    """

    y: int
    x: int
    centre_y: int
    centre_x: int
    centre_height: int
    centre_width: int


@dataclass(frozen=True)
class CentreGrid:
    """The windows of one slide: ``rows`` x ``cols`` kept centres (see the module docstring)."""

    height: int
    width: int
    tile_size: int
    keep: int

    @property
    def margin(self) -> int:
        """Offset of a kept centre inside its window, in pixels (both axes)."""
        return (self.tile_size - self.keep) // 2

    @property
    def rows(self) -> int:
        return -(-self.height // self.keep)

    @property
    def cols(self) -> int:
        return -(-self.width // self.keep)

    def __len__(self) -> int:
        return self.rows * self.cols

    def row_y(self, row: int) -> tuple[int, int]:
        """Return ``(centre_y, centre_height)`` of centre row ``row``."""
        centre_y = row * self.keep
        return centre_y, min(self.keep, self.height - centre_y)

    def row(self, row: int) -> list[Window]:
        """Return the windows of centre row ``row`` (0-based), left to right."""
        centre_y, centre_height = self.row_y(row)
        windows = []
        for col in range(self.cols):
            centre_x = col * self.keep
            windows.append(
                Window(
                    y=centre_y - self.margin,
                    x=centre_x - self.margin,
                    centre_y=centre_y,
                    centre_x=centre_x,
                    centre_height=centre_height,
                    centre_width=min(self.keep, self.width - centre_x),
                )
            )
        return windows


def centre_grid(height: int, width: int, *, tile_size: int, keep: int) -> CentreGrid:
    """Return the centre-crop windows of a ``height`` x ``width`` slide.

    ``tile_size`` is the window side and ``keep`` the kept centre's side,
    both in level-0 pixels, ``1 <= keep <= tile_size``. Raises InputError
    for other values or an empty slide.
    """
    if height < 1 or width < 1:
        raise InputError(None, f"slide of {height} x {width} pixels has nothing to predict")
    if tile_size < 1 or not 1 <= keep <= tile_size:
        raise InputError(None, f"windows need 1 <= keep <= tile_size, got keep {keep} and tile_size {tile_size}")
    return CentreGrid(int(height), int(width), int(tile_size), int(keep))


def choose_read_level(grid: CentreGrid, input_size: int, n_levels: int, read_level: int | str = "auto") -> int:
    """Return the pyramid level that windows are read from.

    ``"auto"``: the level training reads tiles of ``tile_size`` from
    (:func:`tilepipe.data.preprocess.auto_level`), lowered until its downsample
    ``2^l`` divides the window side, the centre side and the margin, so
    that windows start and end on whole pixels of that level. An integer
    level must satisfy the same and exist (InputError otherwise).
    """
    sides = (grid.tile_size, grid.keep, grid.margin)
    if read_level == "auto":
        level = auto_level(grid.tile_size, input_size, n_levels)
        while any(side % 2**level for side in sides):
            level -= 1
        return level
    if isinstance(read_level, bool) or not isinstance(read_level, int) or not 0 <= read_level < n_levels:
        raise InputError(None, f"read_level must be 'auto' or a level 0..{n_levels - 1}, got {read_level!r}")
    if any(side % 2**read_level for side in sides):
        raise InputError(
            None,
            f"read_level {read_level}: its downsample {2**read_level} does not divide the window "
            f"geometry (tile_size {grid.tile_size}, keep {grid.keep}, margin {grid.margin})",
        )
    return read_level


def choose_tissue_level(keep: int, n_levels: int) -> int:
    """Return the level tissue is measured on: about 32 pixels per centre side.

    Among the levels whose downsample divides ``keep`` (so that centres
    start on whole pixels), the one nearest (log scale, ties to the finer)
    to ``keep / 32``.
    """
    target = math.log2(max(keep / TISSUE_PIXELS_PER_CENTRE_SIDE, 1))
    usable = [level for level in range(n_levels) if keep % 2**level == 0]
    return min(usable, key=lambda level: (abs(level - target), level))
