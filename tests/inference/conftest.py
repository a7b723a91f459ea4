"""Inference tests run tiny convolutions: one torch thread (a second only adds waiting, badly so on a busy machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
