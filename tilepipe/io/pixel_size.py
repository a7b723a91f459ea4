"""A slide's pixel size in micrometres, from what its TIFF says, and where that came from.

Looked for in this order: OME-XML ``Pixels`` ``PhysicalSizeX/Y`` (with
their units; micrometres when no unit is given), the Aperio description's
``MPP =`` entry (SVS), the TIFF ``XResolution``/``YResolution`` tags when
``ResolutionUnit`` is a length (inch or centimetre). A slide that says
nothing gets the training slides' ``data.mpp``, and the source says it was
assumed.

A pixel size outside :data:`PLAUSIBLE_UM` (0.05 to 50 um: a 100x objective
gives about 0.07 um, a glomerulus of 200 um would be 4 pixels across at
50 um) is not a slide's. OME and Aperio values are written by microscopy
software on purpose, so such a value is an error naming the file, the
source and the value (it has to be corrected: prediction would resample
the slide by the wrong factor). Resolution tags are filled by any image
writer, mostly with a screen or print default (72, 96 or 300 dpi: 353, 265
or 85 um), so implausible ones are ignored and ``data.mpp`` is assumed, the
source saying what the tags said.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import tifffile

from tilepipe.errors import InputError

__all__ = ["PLAUSIBLE_UM", "PixelSize", "read_pixel_size"]

PLAUSIBLE_UM = (0.05, 50.0)
# Micrometres per unit of OME's UnitsLength values that a pixel size can plausibly use.
_OME_UNITS_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "\u03bcm": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "in": 25400.0,
}
_TIFF_UNITS_UM = {2: 25400.0, 3: 10000.0}  # ResolutionUnit: inch, centimetre
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class PixelSize:
    """Micrometres per level-0 pixel along x and y, and where the value came from (a sentence fragment)."""

    x_um: float
    y_um: float
    source: str

    @property
    def mpp(self) -> float:
        """The mean of x and y, micrometres per pixel."""
        return (self.x_um + self.y_um) / 2


def read_pixel_size(path: str | os.PathLike, assumed_um: float, tif: tifffile.TiffFile | None = None) -> PixelSize:
    """Return the pixel size the TIFF at ``path`` states, or ``assumed_um`` (``data.mpp``) when it states none.

    ``tif``: the file already open (ingest's reader), so it is not parsed
    again. Raises :class:`InputError` naming the file when it is not a
    readable TIFF, and when its OME or Aperio pixel size lies outside
    :data:`PLAUSIBLE_UM` (naming the source and the value).
    """
    try:
        if tif is not None:
            found = _stated(tif, path)
        else:
            with tifffile.TiffFile(path) as opened:
                found = _stated(opened, path)
    except InputError:
        raise
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as err:
        raise InputError(path, f"cannot read the pixel size: {err}") from err
    if isinstance(found, PixelSize):
        return found
    why = found or "not stated by the slide"
    return PixelSize(assumed_um, assumed_um, f"{why}; assumed data.mpp = {assumed_um}")


def _stated(tif: tifffile.TiffFile, path: str | os.PathLike) -> PixelSize | str | None:
    """Return the stated pixel size, or why the resolution tags were ignored, or None when nothing is stated."""
    page = tif.pages.first
    stated = _from_ome(tif.ome_metadata if tif.is_ome else None) or _from_aperio(page.description)
    if stated is not None:
        if not _plausible(stated.x_um, stated.y_um):
            low, high = PLAUSIBLE_UM
            raise InputError(
                path,
                f"{stated.source} says {_pair(stated)} um per pixel, outside {low:g}..{high:g} um: not a slide's "
                "pixel size; correct it in the file's description (e.g. with `tiffcomment`) or re-export the slide",
            )
        return stated
    return _from_resolution(page)


def _plausible(x: float, y: float) -> bool:
    low, high = PLAUSIBLE_UM
    return low <= x <= high and low <= y <= high


def _pair(size: PixelSize) -> str:
    return f"{size.x_um:.6g}" if size.x_um == size.y_um else f"{size.x_um:.6g} x {size.y_um:.6g}"


def _from_ome(xml: str | None) -> PixelSize | None:
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for pixels in root.iter():
        if not pixels.tag.endswith("}Pixels") and pixels.tag != "Pixels":
            continue
        sizes = []
        for axis in ("X", "Y"):
            value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
            if value is None or unit not in _OME_UNITS_UM:
                break
            sizes.append(float(value) * _OME_UNITS_UM[unit])
        if len(sizes) == 2:
            return PixelSize(sizes[0], sizes[1], "OME PhysicalSizeX/Y")
        return None
    return None


def _from_aperio(description: str) -> PixelSize | None:
    if not description.startswith("Aperio"):
        return None
    match = _APERIO_MPP.search(description)
    if match is None:
        return None
    mpp = float(match.group(1))
    return PixelSize(mpp, mpp, "Aperio MPP")


def _from_resolution(page: tifffile.TiffPage) -> PixelSize | str | None:
    """Return the resolution tags' pixel size, or why they were ignored, or None when they state none."""
    unit = _TIFF_UNITS_UM.get(int(page.resolutionunit))
    x_per_unit, y_per_unit = page.resolution
    if unit is None or x_per_unit <= 0 or y_per_unit <= 0:
        return None
    size = PixelSize(unit / x_per_unit, unit / y_per_unit, "TIFF resolution tags")
    if _plausible(size.x_um, size.y_um):
        return size
    per = "dpi" if unit == _TIFF_UNITS_UM[2] else "pixels per cm"
    density = f"{x_per_unit:.6g}" if x_per_unit == y_per_unit else f"{x_per_unit:.6g} x {y_per_unit:.6g}"
    return f"TIFF resolution tags ({density} {per}: {_pair(size)} um) ignored, not a slide's pixel size"
