import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def mnist15k_path():
    path = os.path.join(SHARED_DATA, "mnist15k.npz")
    if not os.path.exists(path):
        pytest.skip("../shared/data/mnist15k.npz not present")
    return path
