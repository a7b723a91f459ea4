"""Code hashes follow the tilepipe import graph and change only with content."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tilepipe import provenance

REPO = Path(__file__).resolve().parent.parent


def test_closure_follows_imports():
    files = {p.name for p in provenance.module_closure(["tilepipe.io.kaggle"])}
    assert {"kaggle.py", "errors.py"} <= files
    assert "rle.py" not in files


def test_hash_changes_with_content_not_mtime(tmp_path, monkeypatch):
    pkg = tmp_path / "tilepipe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tilepipe.b import f\n")
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    (pkg / "c.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", pkg)
    provenance._direct_imports.cache_clear()
    before = provenance.code_hash(["tilepipe.a"])
    os.utime(pkg / "b.py", (1, 1))
    assert provenance.code_hash(["tilepipe.a"]) == before, "a touch changes nothing"
    (pkg / "c.py").write_text("x = 2\n")
    assert provenance.code_hash(["tilepipe.a"]) == before, "an unrelated module changes nothing"
    (pkg / "b.py").write_text("def f():\n    return 2\n")
    assert provenance.code_hash(["tilepipe.a"]) != before, "an imported module's edit changes the hash"
    provenance._direct_imports.cache_clear()


def test_parent_packages_are_in_the_closure():
    files = {
        p.relative_to(provenance.PACKAGE_DIR).as_posix() for p in provenance.module_closure(["tilepipe.model.build"])
    }
    assert {"__init__.py", "model/__init__.py", "model/build.py"} <= files


def test_script_code_hash_follows_the_scripts_imports(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nfrom tilepipe.data.folds import read_folds\nfrom tilepipe.io.rle import encode\n")
    assert provenance.script_modules(script) == [
        "tilepipe.data.folds",
        "tilepipe.data.folds.read_folds",
        "tilepipe.io.rle",
        "tilepipe.io.rle.encode",
    ]
    assert provenance.script_code_hash(script) == provenance.code_hash(["tilepipe.data.folds", "tilepipe.io.rle"])
    script.write_text("import numpy\n")
    with pytest.raises(ValueError, match="imports nothing"):
        provenance.script_code_hash(script)


def _rule_blocks():
    """(file, rule name, text) of every rule and `use rule` in rules/*.smk."""
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*(?:rule \w+:|use rule ))", smk.read_text()):
            name = re.match(r"\s*(?:rule (\w+):|use rule \w+ as (\w+))", block)
            if name:
                yield smk.name, name.group(1) or name.group(2), block


def test_every_rule_hashes_its_own_script_and_declares_provenance():
    """Each job rule's `code` param hashes the script it runs; its provenance output is beside its first output."""
    checked = set()
    for smk, rule, block in _rule_blocks():
        script = re.search(r'script:\s*"\.\./workflow_scripts/([\w.]+)"', block)
        if script:
            assert f'code=code("{script.group(1)}")' in block, f"{smk}: rule {rule} hashes another script"
        output = re.search(r"output:\n(.*?)\n\s*(?:log|params|benchmark|wildcard_constraints):", block, re.S)
        if output:
            first = re.search(r'"([^"]+)"', output.group(1)).group(1)
            assert f'provenance=provenance("{first}")' in output.group(1), f"{smk}: rule {rule}"
            checked.add(rule)
    assert {
        "ingest",
        "tile_index",
        "folds",
        "train_model",
        "predict",
        "write_submission",
        "demo_test_slide",
        "pseudo_labels",
        "pseudo_tile_index",
        "eval_summary",
        "plot_overlay",
    } <= checked


def _job(tmp_path, lr=0.001):
    """A stand-in for a script's `snakemake` object (Snakemake's own containers)."""
    from types import SimpleNamespace

    from snakemake.iocontainers import InputFiles, OutputFiles, Params, Wildcards

    model = tmp_path / "results/models/stage1/fold0/model.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"weights")
    (model.parent / "metrics.csv").write_text("epoch\n1\n")
    settings = {"seed": 42, "train": {"lr": lr, "epochs": 1}, "model": {"encoder": "resnet18"}}
    return SimpleNamespace(
        rule="train_model",
        threads=2,
        output=OutputFiles(
            fromdict={
                "model": str(model),
                "metrics": str(model.parent / "metrics.csv"),
                "provenance": str(model) + ".provenance.json",
            }
        ),
        params=Params(fromdict={"settings": settings, "state": "results/state/x/last.pt", "code": "0123abcd"}),
        wildcards=Wildcards(fromdict={"stage": "stage1", "fold": "0"}),
        input=InputFiles(fromdict={"folds": str(tmp_path / "folds.csv")}),
    )


def test_record_job_writes_the_provenance_beside_the_first_output(tmp_path):
    job = _job(tmp_path)
    path = provenance.record_job(job, runtime=("state",))
    assert str(path) == job.output.provenance
    text = path.read_text()
    record = json.loads(text)
    assert text == json.dumps(record, sort_keys=True, indent=2) + "\n", "sorted keys, stable layout"
    assert record["rule"] == "train_model"
    assert record["wildcards"] == {"fold": "0", "stage": "stage1"}
    assert record["params"] == {
        "settings": {"seed": 42, "train": {"lr": 0.001, "epochs": 1}, "model": {"encoder": "resnet18"}}
    }, "no code, no runtime-only params"
    assert record["seed"] == 42 and record["code"] == "0123abcd" and record["threads"] == 2
    assert record["outputs"] == sorted([job.output.model, job.output.metrics])
    assert {"python", "numpy", "snakemake"} <= set(record["packages"])
    for word in ("time", "date", "host", "node"):
        assert not any(word in key for key in provenance._flatten(record)), f"nothing run-specific: {word}"
    assert "device" not in record
    assert "content" not in record and "checkpoints" not in record, "no store output, no checkpoint input"
    path = provenance.record_job(job, runtime=("state",), device={"device": "1", "source": "slot"})
    assert json.loads(path.read_text())["device"] == {"device": "1", "source": "slot"}


def test_provenance_is_identical_across_processes(tmp_path):
    """Two processes (different hash seeds) write the same bytes for the same job."""
    code = (
        "import sys; from tilepipe import provenance as p; "
        "print(p.dumps(p.provenance_record('a.csv', {'b': {'y': 1, 'x': [1, 2]}, 'a': 0.1, 'seed': 3}, 'c0de',"
        " rule='r', wildcards={'slide': 's'})))"
    )
    texts = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(texts) == 1


def test_torch_is_recorded_only_when_imported():
    import numpy as np

    assert "torch" not in provenance.package_versions({"numpy": np})
    assert "torch" in provenance.package_versions({"numpy": np, "torch": object()})


def test_write_provenance_needs_its_artifact_and_plain_params(tmp_path):
    with pytest.raises(FileNotFoundError):
        provenance.write_provenance(tmp_path / "missing.csv", {}, "c0de")
    (tmp_path / "a.csv").write_text("x\n")
    with pytest.raises(TypeError):
        provenance.write_provenance(tmp_path / "a.csv", {"bad": object()}, "c0de")
    with pytest.raises(ValueError):
        provenance.write_provenance(tmp_path / "a.csv", {"bad": float("nan")}, "c0de")
    assert not provenance.provenance_path(tmp_path / "a.csv").exists(), "nothing written on error"


def test_declared_path_must_match_the_first_output(tmp_path):
    job = _job(tmp_path)
    job.output = type(job.output)(fromdict={"model": job.output.model, "provenance": str(tmp_path / "elsewhere.json")})
    with pytest.raises(ValueError, match="is not"):
        provenance.record_job(job)


def test_compare_runs_names_the_artifact_and_the_setting(tmp_path, capsys):
    runs = []
    for name, lr in (("a", 0.001), ("b", 0.002)):
        root = tmp_path / name
        root.mkdir()
        job = _job(root, lr=lr)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            job.output = type(job.output)(fromdict={k: os.path.relpath(v, root) for k, v in job.output.items()})
            provenance.record_job(job, runtime=("state",))
        finally:
            os.chdir(cwd)
        runs.append(root)
    assert provenance.compare_runs(runs[0], runs[0]) == []
    lines = provenance.compare_runs(*runs)
    assert lines == ["results/models/stage1/fold0/model.pt: params.settings.train.lr: 0.001 != 0.002"]
    assert provenance.main([str(r) for r in runs]) == 1
    assert "params.settings.train.lr" in capsys.readouterr().out


def test_content_digest_follows_bytes_not_mtimes_or_write_order(tmp_path):
    def store(path, files):
        path.mkdir(parents=True)
        for name, data in files:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        return provenance.content_digest(path)

    files = [("zarr.json", b"{}"), ("0/c/0/0", b"abc"), ("0/c/0/1", b"def")]
    first = store(tmp_path / "a.zarr", files)
    assert first.startswith("sha256:")
    assert store(tmp_path / "b.zarr", files[::-1]) == first, "same files written in another order, later"
    assert store(tmp_path / "c.zarr", [*files[:2], ("0/c/0/1", b"deg")]) != first, "one byte"
    assert store(tmp_path / "d.zarr", [*files[:2], ("0/c/1/0", b"def")]) != first, "a chunk moved"
    assert store(tmp_path / "e.zarr", files[:2]) != first, "a chunk missing"
    (tmp_path / "w.pt").write_bytes(b"weights")
    assert provenance.content_digest(tmp_path / "w.pt") == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_record_job_records_store_content_and_input_checkpoints(tmp_path):
    from snakemake.iocontainers import InputFiles, OutputFiles

    job = _job(tmp_path)
    store = tmp_path / "results/predictions/stage1/s.zarr"
    store.mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    init = tmp_path / "results/models/stage1/fold0/model.pt"
    job.output = OutputFiles(fromdict={"store": str(store), "provenance": f"{store}.provenance.json"})
    job.input = InputFiles(fromdict={"models": [str(init)], "folds": str(tmp_path / "folds.csv")})
    record = json.loads(provenance.record_job(job, runtime=("state",)).read_text())
    assert record["content"] == {str(store): provenance.content_digest(store)}
    assert record["checkpoints"] == {str(init): "sha256:" + hashlib.sha256(b"weights").hexdigest()}
