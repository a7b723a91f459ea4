"""Code hashes follow the tilepipe import graph and change only with content."""

import os

from tilepipe import provenance


def test_closure_follows_imports():
    files = {p.name for p in provenance.module_closure(["tilepipe.dataset"])}
    assert {"dataset.py", "errors.py"} <= files
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
