import os

import pytest
import torch

# The networks here are small: one thread avoids OpenMP oversubscription when the 2-core CI machine (or a developer)
# runs anything beside the tests; it changes no result, only speed.
torch.set_num_threads(int(os.environ.get("FLOSS_TEST_THREADS", "1")))


@pytest.fixture
def one_thread():
    """One intra-op thread for a test (tiny tensors: more threads only fight other processes for the cores); the
    thread count is restored afterwards. Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
