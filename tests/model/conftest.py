"""Fixtures of the model tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny inputs gain nothing from threads, and OpenMP threads spinning on a busy machine cost 3-4x the time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
