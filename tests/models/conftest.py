import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Backbone tests run many small ops: one thread beats two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
