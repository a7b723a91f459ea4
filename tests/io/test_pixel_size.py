"""Pixel size from OME, Aperio and TIFF resolution tags; implausible values ignored; data.mpp assumed otherwise."""

import numpy as np
import pytest
import tifffile

from tilepipe.errors import InputError
from tilepipe.io.pixel_size import read_pixel_size

IMAGE = np.zeros((32, 48, 3), np.uint8)
APERIO = "Aperio Image Library v12.0.15\r\n46000x32914 (240x240) JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990|Date = x"


def write(path, **kwargs):
    tifffile.imwrite(path, IMAGE, **kwargs)
    return path


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [("µm", 0.25, 0.25), ("nm", 250.0, 0.25), ("mm", 0.00025, 0.25), (None, 0.5, 0.5)],
)
def test_ome_physical_size_with_its_unit(tmp_path, unit, value, expected):
    metadata = {"axes": "YXS", "PhysicalSizeX": value, "PhysicalSizeY": value}
    if unit is not None:
        metadata |= {"PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit}
    size = read_pixel_size(write(tmp_path / "s.ome.tif", ome=True, metadata=metadata), assumed_um=0.5)
    assert size.mpp == pytest.approx(expected) and size.source == "OME PhysicalSizeX/Y"


def test_aperio_mpp_wins_over_resolution_tags(tmp_path):
    path = write(tmp_path / "s.svs", description=APERIO, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    size = read_pixel_size(path, assumed_um=0.5)
    assert (size.mpp, size.source) == (pytest.approx(0.499), "Aperio MPP")


@pytest.mark.parametrize(("unit", "per_unit", "expected"), [("CENTIMETER", 40000, 0.25), ("INCH", 25400 / 0.5, 0.5)])
def test_resolution_tags_in_a_length_unit(tmp_path, unit, per_unit, expected):
    path = write(tmp_path / "s.tif", resolution=(per_unit, per_unit), resolutionunit=unit)
    size = read_pixel_size(path, assumed_um=1.0)
    assert (size.mpp, size.source) == (pytest.approx(expected), "TIFF resolution tags")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # tifffile writes no unit
        {"resolution": (72, 72), "resolutionunit": "INCH"},  # a writer's default 72 dpi: 352 um, not a slide's
        {"resolution": (2, 2), "resolutionunit": "NONE"},
    ],
)
def test_no_usable_statement_assumes_data_mpp_and_says_so(tmp_path, kwargs):
    size = read_pixel_size(write(tmp_path / "s.tif", **kwargs), assumed_um=0.5)
    assert size.mpp == 0.5 and "assumed data.mpp = 0.5" in size.source


def test_anisotropic_pixels_keep_both_axes(tmp_path):
    path = write(tmp_path / "s.tif", resolution=(40000, 20000), resolutionunit="CENTIMETER")
    size = read_pixel_size(path, assumed_um=0.5)
    assert (size.x_um, size.y_um) == (pytest.approx(0.25), pytest.approx(0.5))


def test_a_file_that_is_not_a_tiff_is_named(tmp_path):
    path = tmp_path / "s.tif"
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match=r"s\.tif.*pixel size"):
        read_pixel_size(path, assumed_um=0.5)


@pytest.mark.parametrize(
    ("name", "kwargs", "said"),
    [
        ("s.ome.tif", {"ome": True, "metadata": {"axes": "YXS", "PhysicalSizeX": 0.01, "PhysicalSizeY": 0.01}}, "0.01"),
        (
            "s.ome.tif",
            {"ome": True, "metadata": {"axes": "YXS", "PhysicalSizeX": 80.0, "PhysicalSizeY": 0.5}},
            "80 x 0.5",
        ),
        ("s.svs", {"description": APERIO.replace("MPP = 0.4990", "MPP = 0.0")}, "0"),
        ("s.svs", {"description": APERIO.replace("MPP = 0.4990", "MPP = 250")}, "250"),
    ],
)
def test_an_absurd_stated_pixel_size_is_an_error_naming_file_source_and_value(tmp_path, name, kwargs, said):
    path = write(tmp_path / name, **kwargs)
    with pytest.raises(InputError) as err:
        read_pixel_size(path, assumed_um=0.5)
    assert err.value.path == str(path)
    source = "Aperio MPP" if name.endswith(".svs") else "OME PhysicalSizeX/Y"
    assert f"{source} says {said} um per pixel, outside 0.05..50 um" in str(err.value)


@pytest.mark.parametrize("value", [0.05, 50.0])
def test_the_plausible_range_includes_its_ends(tmp_path, value):
    metadata = {"axes": "YXS", "PhysicalSizeX": value, "PhysicalSizeY": value}
    assert read_pixel_size(write(tmp_path / "s.ome.tif", ome=True, metadata=metadata), assumed_um=0.5).mpp == value


@pytest.mark.parametrize(
    ("per_unit", "unit", "said"),
    [(72, "INCH", "(72 dpi: 352.778 um) ignored"), (1e8, "CENTIMETER", "(1e+08 pixels per cm: 0.0001 um) ignored")],
)
def test_implausible_resolution_tags_are_ignored_and_the_source_says_what_they_said(tmp_path, per_unit, unit, said):
    size = read_pixel_size(write(tmp_path / "s.tif", resolution=(per_unit, per_unit), resolutionunit=unit), 0.5)
    assert size.mpp == 0.5
    assert size.source == f"TIFF resolution tags {said}, not a slide's pixel size; assumed data.mpp = 0.5"
