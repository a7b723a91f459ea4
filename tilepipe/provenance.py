"""What code a job runs: the tilepipe modules it imports and their hash.

Snakemake reruns a job when its script changes, not when a module the
script imports changes. Rules therefore take ``code_hash(modules)`` as a
param: it changes exactly when the source of one of the ``tilepipe``
modules the job can import changes (touching a file does not change it).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "tilepipe"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _direct_imports(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in found if n.split(".")[0] == PACKAGE)


def module_closure(modules: tuple[str, ...] | list[str]) -> list[Path]:
    """Return the source files of ``modules`` and every tilepipe module they import, sorted."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        todo.extend(_direct_imports(path))
    return sorted(set(seen.values()))


def code_hash(modules: tuple[str, ...] | list[str]) -> str:
    """Return a 16-hex-digit sha256 over the sources in ``module_closure(modules)``."""
    digest = hashlib.sha256()
    for path in module_closure(modules):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
