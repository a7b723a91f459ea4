"""The package's layers: lower layers never import higher ones, and torch-free modules never import torch.

The import graph is read with ``ast`` from the sources (every ``import`` and
``from ... import``, also inside functions), so a lazy import counts too.
A subprocess then imports each torch-free module for real and checks that
torch did not come in through a third-party package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "tilepipe"

# Rank of each layer: a module may import modules of lower rank, and of its
# own rank only inside its own subpackage. Top-level modules are the core.
LAYERS = {
    "core": 0,
    "io": 1,
    "stores": 2,
    "data": 3,
    "model": 4,
    "training": 5,
    "inference": 5,
    "evaluation": 6,
    "objects": 6,
    "demo": 6,
}

# Modules that must not import torch, directly or through tilepipe modules.
TORCH_USERS = {
    "tilepipe.data.tile_dataset",  # the torch Dataset and DataLoader
    "tilepipe.data.augment",  # albumentations imports albumentations.pytorch, and so torch, when torch is installed
}
TORCH_LAYERS = {"model", "training"}
TORCH_INFERENCE = {"tilepipe.inference.predict", "tilepipe.inference.ensemble"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def imports(name: str) -> set[str]:
    """The tilepipe modules and the top-level third-party packages module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    resolved = set()
    for item in found:
        if item.split(".")[0] != "tilepipe":
            resolved.add(item.split(".")[0])
        elif item in MODULES:
            resolved.add(item)
    return resolved


def closure(name: str) -> set[str]:
    """``name`` and every tilepipe module it imports, with their parent packages, transitively."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        todo.extend(i for i in imports(current) if i.startswith("tilepipe"))
        todo.extend(current.rsplit(".", k)[0] for k in range(1, current.count(".")))
    return seen


def torch_free(name: str) -> bool:
    return name not in TORCH_USERS and layer(name) not in TORCH_LAYERS and name not in TORCH_INFERENCE


def test_every_subpackage_has_a_layer():
    assert {layer(name) for name in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_lower_layers_never_import_higher_ones(name):
    own = layer(name)
    for target in imports(name):
        if not target.startswith("tilepipe") or target == "tilepipe":
            continue
        other = layer(target)
        assert LAYERS[other] < LAYERS[own] or other == own, f"{name} ({own}) imports {target} ({other})"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if torch_free(n)))
def test_torch_free_modules_never_import_torch(name):
    users = {m for m in closure(name) if imports(m) & {"torch", "torchvision", "pretrainedmodels"}}
    assert not users, f"{name} is torch-free but imports torch through {sorted(users)}"


def test_torch_free_modules_import_without_torch():
    names = sorted(n for n in MODULES if torch_free(n))
    code = f"import sys\nfor n in {names!r}:\n    __import__(n)\n    assert 'torch' not in sys.modules, n\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_checks_catch_a_violation(tmp_path, monkeypatch):
    """A stores module importing the training layer and torch is reported by both checks."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom tilepipe.training.trainer import train_fold\n")
    monkeypatch.setitem(MODULES, "tilepipe.stores.bad", bad)
    with pytest.raises(AssertionError, match="imports tilepipe.training.trainer"):
        test_lower_layers_never_import_higher_ones("tilepipe.stores.bad")
    with pytest.raises(AssertionError, match="imports torch through"):
        test_torch_free_modules_never_import_torch("tilepipe.stores.bad")
