import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker, and every process a test starts
    # (they inherit the environment unless a test sets its own), uses one thread, so that the workers
    # do not oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
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
    """Run `python -m bitcl ARGS` as a user would, in a new interpreter; returns the CompletedProcess.

    For the end-to-end tests of the entry point itself (exit status from the process, signals,
    environment variables); elsewhere :func:`cli` gives the same answer without starting Python
    and importing torch again (~2 s a call)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "bitcl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli(*args):
    """``bitcl ARGS`` in this process (``bitcl.cli.main``): a CompletedProcess like :func:`run_cli`'s, with
    the exit status main returns and what it printed on stdout and stderr. The torch thread count a
    command may change (``bitcl rl --threads``) is restored."""
    import contextlib
    import io
    import subprocess

    from bitcl.cli import main
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as stop:  # argparse's --help
                code = stop.code if isinstance(stop.code, int) else 0
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["bitcl", *map(str, args)], code, out.getvalue(), err.getvalue())
