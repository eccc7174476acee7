"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (results and timings do not depend on the
    machine's core count; the suite runs on 2 shared cores), restoring the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
