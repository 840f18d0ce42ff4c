import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_DATA = os.path.join(os.path.dirname(__file__), "..", "data")  # real MNIST committed in the repo (data/README.md)


@pytest.fixture
def mnist15k_path():
    """The 15,000-digit MNIST set committed in data/ (data/README.md)."""
    return os.path.join(REPO_DATA, "mnist15k.npz")


@pytest.fixture
def one_thread():
    """Tiny models run many small ops: one thread beats two on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TEST_DATA = os.path.join(os.path.dirname(__file__), "data", "mnist2k.npz")


@pytest.fixture(scope="session")
def small_npz():
    """2,000 real MNIST digits (1,600 train / 400 test), committed in tests/data: a fixed random subset
    of data/mnist15k.npz with its train/test split."""
    return TEST_DATA


def run_cli(*args, timeout=300, **kwargs):
    """Run `python -m bitcl ARGS` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "bitcl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
