import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster on a shared, loaded CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
