"""Fixtures of the growth tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Ops on these tiny tensors are fastest on one thread; with two, every op waits on a thread barrier,
    # which costs milliseconds when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
