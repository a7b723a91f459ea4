"""Two clean runs of the tiny demo make the same artifacts, byte for byte.

The second run is made here, in a fresh folder with the same overlay, and
compared with the shared ``tiny_run``: tile indices, folds, the epoch
samples, the CPU weights, the submission, every other artifact and every
provenance file. Only metrics.csv's ``seconds`` column (wall time) may
differ.
"""

import filecmp
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow.runner import TINY, run_snakemake
from tilepipe.provenance import SUFFIX, compare_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("second_run")
    run_snakemake(workdir, overlay=TINY)
    return workdir


def _relative(run: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.glob(pattern))


def _same_files(a: Path, b: Path, pattern: str) -> list[str]:
    files = _relative(a, pattern)
    assert files, f"no {pattern} in {a}"
    assert files == _relative(b, pattern)
    differ = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    assert not differ, f"differ between the runs: {differ}"
    return files


def test_tile_indices_are_identical(tiny_run, second_run):
    assert len(_same_files(tiny_run, second_run, "results/tiles/**/*.parquet")) >= 8 + 3


def test_folds_are_identical(tiny_run, second_run):
    _same_files(tiny_run, second_run, "results/folds.csv")


def _epoch_samples(run: Path, stage: str, fold: int) -> list[pd.DataFrame]:
    """The tiles each epoch of (stage, fold) drew, recomputed from the run's own inputs and recorded settings.

    Tile indices are concatenated in the order the train rule lists them
    (the demo plan's order of train, then test and external slides).
    """
    from tilepipe.data.folds import read_folds
    from tilepipe.data.sampler import sample_epoch
    from tilepipe.demo.plan import plan_demo
    from tilepipe.training.trainer import fold_inputs

    def record(artifact: str) -> dict:
        return json.loads((run / f"{artifact}{SUFFIX}").read_text())["params"]

    settings = record(f"results/models/{stage}/fold{fold}/model.pt")["settings"]
    demo = record("results/demo/truth.csv")
    plan = plan_demo(demo["demo"], demo["seed"])
    ids = {split: [s.id for s in plan if s.split == split] for split in ("train", "test", "external")}
    tiles = pd.concat([pd.read_parquet(run / f"results/tiles/{s}.parquet") for s in ids["train"]], ignore_index=True)
    pseudo = None
    if stage == "stage2":
        pseudo = pd.concat(
            [pd.read_parquet(run / f"results/tiles/pseudo/{s}.parquet") for s in ids["test"] + ids["external"]]
        )
    inputs = fold_inputs(tiles, read_folds(run / "results/folds.csv"), fold, {}, settings["sampling"], pseudo)
    return [
        sample_epoch(inputs.train, epoch=epoch, seed=settings["seed"], fold=fold)
        for epoch in range(1, settings["train"]["epochs"] + 1)
    ]


def _folds(run: Path) -> list[int]:
    return sorted(int(f) for f in pd.read_csv(run / "results/folds.csv")["fold"].unique() if f >= 0)


def test_epoch_samples_are_identical(tiny_run, second_run):
    for stage in ("stage1", "stage2"):
        for fold in _folds(tiny_run):
            first, second = _epoch_samples(tiny_run, stage, fold), _epoch_samples(second_run, stage, fold)
            assert len(first) == len(second) >= 1
            for a, b in zip(first, second, strict=False):
                assert len(a) > 0
                pd.testing.assert_frame_equal(a, b)


def test_cpu_weights_are_identical(tiny_run, second_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("train.device auto trains on the GPU here; the claim is about CPU weights")
    files = _relative(tiny_run, "results/models/*/fold*/model.pt")
    assert len(files) == 2 * len(_folds(tiny_run)) and files == _relative(second_run, "results/models/*/fold*/model.pt")
    for name in files:
        if (tiny_run / name).read_bytes() == (second_run / name).read_bytes():
            continue
        # Name what differs: the tensors, or only the container around them.
        a = torch.load(tiny_run / name, weights_only=True)
        b = torch.load(second_run / name, weights_only=True)
        tensors = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
        pytest.fail(
            f"{name}: bytes differ; {len(tensors)} of {len(a['state_dict'])} tensors differ"
            + (f", e.g. {tensors[:3]}" if tensors else " (none: only the file around them)")
        )


def test_submission_is_identical(tiny_run, second_run):
    _same_files(tiny_run, second_run, "results/submission.csv")


def _tree_differences(a: Path, b: Path) -> list[str]:
    """Files that differ or exist on one side only, under two directories (a zarr store)."""
    found = []
    compared = filecmp.dircmp(a, b, ignore=[])
    found += [str(a / n) for n in compared.left_only + compared.right_only + compared.funny_files]
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    found += [str(a / n) for n in mismatch + errors]
    for sub in compared.common_dirs:
        found += _tree_differences(a / sub, b / sub)
    return found


def test_every_artifact_and_provenance_is_identical(tiny_run, second_run):
    """Every declared output (stores and predictions included) and its provenance record."""
    assert compare_runs(tiny_run, second_run) == [], "provenance records differ"
    outputs = []
    for record in sorted(tiny_run.glob(f"results/**/*{SUFFIX}")):
        outputs += [record.relative_to(tiny_run), *map(Path, json.loads(record.read_text())["outputs"])]
    assert len(outputs) > 50
    differ = []
    for name in outputs:
        a, b = tiny_run / name, second_run / name
        if a.is_dir():
            differ += _tree_differences(a, b)
        elif name.name == "metrics.csv":
            pd.testing.assert_frame_equal(
                pd.read_csv(a).drop(columns="seconds"), pd.read_csv(b).drop(columns="seconds"), check_exact=True
            )
        elif a.read_bytes() != b.read_bytes():
            differ.append(str(name))
    assert not differ, f"differ between the runs: {differ}"
