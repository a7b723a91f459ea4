"""Fixtures of the workflow tests: a finished tiny demo run, shared by the whole session."""

from pathlib import Path

import pytest

from tests.workflow.runner import TINY, run_snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny demo run through the default target; returns its folder."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    run_snakemake(workdir, overlay=TINY)
    return workdir
