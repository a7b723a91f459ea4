"""apply.slides and apply.models as users give them: folders or lists, checked with the key and path named."""

import pytest

from tilepipe.errors import InputError
from tilepipe.io.user_inputs import list_model_files, list_slides


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_folder_lists_its_slides_by_id(tmp_path):
    for name in ("b.svs", "a.ome.tiff", "c.TIF", "notes.txt", ".hidden.tif"):
        touch(tmp_path / name)
    assert list(list_slides(tmp_path)) == ["a", "b", "c"]


def test_a_list_of_files(tmp_path):
    paths = [touch(tmp_path / "x" / "s1.tif"), touch(tmp_path / "y" / "s2.svs")]
    assert list_slides([str(p) for p in paths]) == {"s1": paths[0], "s2": paths[1]}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [str(touch(d / "a.tif")), str(touch(d / "b" / "a.svs"))], "two files for slide a"),
        (lambda d: [str(d / "gone.tif")], "file is missing"),
        (lambda d: [str(touch(d / "scan.png"))], "not a slide file name"),
        (lambda d: [str(touch(d / "bad id.tif"))], "slide id"),
        (lambda d: str(d / "empty"), "no such folder"),
        (lambda d: [], "empty list"),
    ],
)
def test_bad_slide_lists_are_named(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        list_slides(make(tmp_path))


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="apply.slides: no slide files"):
        list_slides(tmp_path / "none")


def test_model_folders(tmp_path):
    touch(tmp_path / "fold1" / "model.pt")
    touch(tmp_path / "fold0" / "model.pt")
    touch(tmp_path / "model_seed0_fold2_bestscore.pth")
    assert [p.relative_to(tmp_path).as_posix() for p in list_model_files(tmp_path)] == [
        "fold0/model.pt",
        "fold1/model.pt",
        "model_seed0_fold2_bestscore.pth",
    ]
    touch(tmp_path / "model_seed0_fold1_bestscore.pth")
    with pytest.raises(InputError, match="two models for fold 1"):
        list_model_files(tmp_path)
    with pytest.raises(InputError, match="apply.models: no fold"):
        list_model_files(touch(tmp_path / "e" / "x").parent)
