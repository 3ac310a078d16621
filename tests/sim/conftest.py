import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The simulator's federated tests train tiny models: one thread is faster, and far faster
    on a shared, loaded CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
