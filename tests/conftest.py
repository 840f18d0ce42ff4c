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


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory):
    """2,000 real MNIST digits (from shared/data/mnist15k.npz) with its train/test split."""
    import numpy as np
    path = os.path.join(SHARED_DATA, "mnist15k.npz")
    if not os.path.exists(path):
        pytest.skip("../shared/data/mnist15k.npz not present")
    with np.load(path) as f:
        x, y, train = f["x"], f["y"], f["train"]
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(train), 1600, replace=False),
                                   rng.choice(np.flatnonzero(~train), 400, replace=False)]))
    out = tmp_path_factory.mktemp("data") / "mnist2k.npz"
    np.savez(out, x=x[keep], y=y[keep], train=train[keep])
    return str(out)


def run_cli(*args, timeout=300, **kwargs):
    """Run `python -m bitcl ARGS` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "bitcl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
