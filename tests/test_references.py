"""Every ``tilepipe.x.y`` the code and docs name exists, in the module named.

A docstring or a doc that names a function in the wrong module sends a
reader to the wrong file; this reads the dotted names in the package, the
workflow, the benchmarks and the docs, imports them, and checks that a
function or class named ``tilepipe.a.f`` is defined in ``tilepipe.a`` (or
re-exported by a package's ``__all__``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((REPO / "tilepipe").rglob("*.py")),
    *sorted((REPO / "workflow_scripts").glob("*.py")),
    *sorted((REPO / "rules").glob("*.smk")),
    *sorted((REPO / "benchmarks").rglob("*.py")),
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
DOTTED = re.compile(r"(?<![\w/.-])tilepipe(?:\.[A-Za-z_]\w*)+")


def resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        obj = module
        for attribute in parts[i:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        if i < len(parts) and callable(obj) and getattr(obj, "__module__", None) not in (None, module_name):
            return parts[i] in getattr(module, "__all__", ()) and module.__file__.endswith("__init__.py")
        return True
    return False


def names_in(path: Path) -> set[str]:
    return {m.group(0) for m in DOTTED.finditer(path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_objects_exist_where_named(path):
    missing = sorted(n for n in names_in(path) if not resolves(n))
    assert not missing, f"{path.relative_to(REPO)} names what does not exist there: {missing}"


def test_the_check_catches_a_wrong_module():
    assert resolves("tilepipe.stores.probability.foreground_cutoff")
    assert not resolves("tilepipe.evaluation.submission.foreground_cutoff")  # imported there, defined elsewhere
    assert not resolves("tilepipe.data.loader")
    assert resolves("tilepipe.model.build_model")  # re-exported by the package
