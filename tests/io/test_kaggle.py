"""The Kaggle-layout reader: ids, orders, and every cross-file inconsistency."""

from pathlib import Path

import pytest

from tilepipe.errors import InputError
from tilepipe.io.kaggle import KaggleDataset, check_id, patient_key, read_id_csv

INFO_HEADER = "image_file,width_pixels,height_pixels,patient_number"


def make_root(
    tmp_path: Path,
    *,
    train=("a1", "b2"),
    test=("t2", "t1"),
    external=("e1",),
    rle_ids=("a1", "b2"),
    info_rows=None,
    json_ids=(),
) -> Path:
    root = tmp_path / "data"
    for split, ids in (("train", train), ("test", test), ("external", external)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for slide_id in ids:
            (root / split / f"{slide_id}.tiff").write_bytes(b"")
    for slide_id in json_ids:
        (root / "train" / f"{slide_id}.json").write_text("[]")
    (root / "train.csv").write_text("id,encoding\n" + "".join(f"{i},1 2\n" for i in rle_ids))
    (root / "sample_submission.csv").write_text("id,predicted\n" + "".join(f"{i},\n" for i in test))
    if info_rows is None:
        info_rows = [f"{i}.tiff,30,20,{100 + n}" for n, i in enumerate([*train, *test])]
    (root / "HuBMAP-20-dataset_information.csv").write_text(INFO_HEADER + "\n" + "\n".join(info_rows) + "\n")
    return root


def test_ids_splits_and_order(tmp_path):
    data = KaggleDataset(make_root(tmp_path))
    data.validate()
    assert data.train_ids == ["a1", "b2"]
    assert data.test_ids == ["t2", "t1"], "test ids keep sample_submission order"
    assert data.external_ids == ["e1"]
    assert data.split_of("t1") == "test"
    assert data.rle("a1") == "1 2" and data.rle("t1") is None
    assert data.expected_shape("a1") == (20, 30)
    assert data.expected_shape("e1") is None
    assert data.patient("b2") == "101"


def test_polygons_only_slide_is_valid(tmp_path):
    data = KaggleDataset(make_root(tmp_path, rle_ids=("a1",), json_ids=("b2",)))
    data.validate()
    assert data.rle("b2") is None
    assert data.polygons_path("b2").name == "b2.json"


@pytest.mark.parametrize(
    ("kwargs", "file", "problem"),
    [
        ({"rle_ids": ("a1", "b2", "zz")}, "train.csv", "id zz has no slide"),
        ({"rle_ids": ("a1",)}, "b2.tiff", "no row in train.csv and no b2.json"),
        (
            {"info_rows": ["a1.tiff,30,20,1", "t1.tiff,30,20,2", "t2.tiff,30,20,3"]},
            "HuBMAP-20-dataset_information.csv",
            "slide b2 has no row",
        ),
        ({"rle_ids": ("a1", "b2", "a1")}, "train.csv", "is listed more than once"),
    ],
)
def test_inconsistencies_name_the_file(tmp_path, kwargs, file, problem):
    data = KaggleDataset(make_root(tmp_path, **kwargs))
    with pytest.raises(InputError) as err:
        data.validate()
    assert file in str(err.value) and problem in str(err.value)


def test_submission_id_without_slide(tmp_path):
    root = make_root(tmp_path)
    (root / "sample_submission.csv").write_text("id,predicted\nt1,\nt2,\nt3,\n")
    with pytest.raises(InputError, match=r"sample_submission.csv: id t3 has no slide"):
        _ = KaggleDataset(root).test_ids


def test_missing_patient_is_an_error(tmp_path):
    root = make_root(tmp_path, info_rows=["a1.tiff,30,20,", "b2.tiff,30,20,7", "t1.tiff,1,1,1", "t2.tiff,1,1,1"])
    with pytest.raises(InputError, match="slide a1 has no patient_number"):
        KaggleDataset(root).patient("a1")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a.b", "", "a b", "ü"])
def test_ids_with_path_tricks_are_rejected(tmp_path, bad):
    with pytest.raises(InputError, match="is not of the form"):
        check_id(bad, "train.csv")


def test_bad_id_in_csv_is_rejected(tmp_path):
    root = make_root(tmp_path)
    (root / "train.csv").write_text("id,encoding\n../x,1 2\n")
    with pytest.raises(InputError, match=r"train.csv: slide id '../x'"):
        KaggleDataset(root).validate()


@pytest.mark.parametrize("value", [63921, 63921.0, "63921", "63921.0", " 63921 "])
def test_patient_numbers_written_in_any_way_are_one_patient(value):
    assert patient_key(value) == "63921"


def test_id_csvs_strip_ids_and_refuse_bad_ones(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id,predicted\n a1 ,1 2\nb2,\n")
    table = read_id_csv(good, ("id", "predicted"))
    assert table["id"].tolist() == ["a1", "b2"] and table["predicted"].tolist() == ["1 2", ""]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,predicted\n../x,\n")
    with pytest.raises(InputError, match=r"bad.csv: slide id '../x'"):
        read_id_csv(bad, ("id", "predicted"))
    with pytest.raises(InputError, match=r"good.csv: truth has no 'mask', 'z' columns"):
        read_id_csv(good, ("id", "mask", "z"), "truth")
    with pytest.raises(InputError, match=r"nope.csv: table does not exist"):
        read_id_csv(tmp_path / "nope.csv", ("id",))


def test_slides_named_as_the_portal_names_them_are_found(tmp_path):
    root = make_root(tmp_path, train=(), test=(), external=(), rle_ids=(), info_rows=[])
    for name in ("p1.ome.tif", "p2.OME.TIFF", "p3.tif", "p4.svs", "p5.tiff", "notes.txt", ".p6.tif"):
        (root / "external" / name).write_bytes(b"")
    data = KaggleDataset(root)
    assert data.external_ids == ["p1", "p2", "p3", "p4", "p5"]
    assert data.tiff_path("p2").name == "p2.OME.TIFF"
    (root / "external" / "p1.svs").write_bytes(b"")
    with pytest.raises(InputError, match=r"p1.svs: two slide files for slide p1: p1.ome.tif and p1.svs"):
        _ = KaggleDataset(root).external_ids


def test_fold_patients_are_checked_against_the_dataset(tmp_path):
    data = KaggleDataset(make_root(tmp_path))  # train patients 100 and 101
    data.validate({"n": 2, "patients": [[100], ["101.0"]]})
    data.validate({"n": 2, "patients": None})
    info = r"HuBMAP-20-dataset_information.csv: "
    with pytest.raises(InputError, match=info + r"folds.patients\[1\] names patient 63921, who has no train slide"):
        data.validate({"n": 4, "patients": [[100], [63921]]})
    with pytest.raises(InputError, match=info + r"2 train patient\(s\) cannot make folds.n = 3"):
        data.validate({"n": 3, "patients": None})
