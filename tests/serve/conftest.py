import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Serve tests run torch on one thread: on a shared 2-core host two threads contend and a
    tiny model trains 30x slower than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
