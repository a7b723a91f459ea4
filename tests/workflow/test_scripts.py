"""Workflow scripts ask the snakemake object for named files the way that works.

``"name" in snakemake.input`` is always False: Snakemake's Namedlist is a
list of the file paths, so ``in`` compares with the paths, not the names.
Stage 2 trained without its pseudo-labelled tiles for that reason (and the
pseudo tile index read no pseudo labels). ``snakemake.input.get("name")``
is the test that works.
"""

import ast
from pathlib import Path

import pytest
from snakemake.iocontainers import InputFiles

from tests.workflow.runner import REPO

SCRIPTS = sorted((REPO / "workflow_scripts").glob("*.py"))
CONTAINERS = {"input", "output", "params", "log", "wildcards", "resources"}


def name_tests(path: Path) -> list[str]:
    """The ``"name" in snakemake.<container>`` comparisons in a script, as source lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            continue
        left, container = node.left, node.comparators[0]
        if (
            isinstance(left, ast.Constant)
            and isinstance(left.value, str)
            and isinstance(container, ast.Attribute)
            and container.attr in CONTAINERS
            and isinstance(container.value, ast.Name)
            and container.value.id == "snakemake"
        ):
            found.append(ast.unparse(node))
    return found


def test_membership_by_name_does_not_work_on_a_namedlist():
    files = InputFiles(fromdict={"pseudo_tiles": ["a.parquet"], "init": "m.pt"})
    assert "pseudo_tiles" not in files, "why the scripts must not ask this way"
    assert files.get("pseudo_tiles") == ["a.parquet"] and files.get("labels") is None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_test_a_name_with_in(script):
    assert name_tests(script) == []


def test_the_check_finds_the_bug(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('pseudo = "pseudo_tiles" in snakemake.input\nok = snakemake.input.get("labels") is not None\n')
    assert name_tests(bad) == ["'pseudo_tiles' in snakemake.input"]
