"""Methods in their less-trodden modes: ANPyC's single projection per step, data sources reported
in results.json, benchmarks that need data refusing to run without it."""
import json
import struct

import numpy as np
import pytest

from bitcl.config import RunConfig
from bitcl.engine import Engine, run
from bitcl.errors import ConfigError, DataError
from bitcl.quant import bit_states
from bitcl.quant.state import BitState
from bitcl.support import tiny_digits
from tests.conftest import cli


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_anpyc_projects_once_per_step_and_holds_pruned_weights_at_code_zero(monkeypatch):
    """ANPyC on the quantised backbone: between backward and the end of after_step each BitState
    is projected exactly once (task training and pruning retraining alike); pruned weights stay
    at code 0 and latent 0 through every retraining step."""
    engine = Engine(RunConfig(method="anpyc", hidden=[8], tasks=2, classes=[0, 1, 2, 3], epochs=1, batch_size=16,
                              quiet=True, method_options={"prune_first": 20.0}), data=tiny_digits(per_class=16))
    strategy = engine.strategy
    states = dict(bit_states(engine.model))
    counter = {"calls": None}
    per_step, retrain_steps = [], []

    def counting(original):
        def counted(self, *args, **kwargs):
            if counter["calls"] is not None:
                counter["calls"] += 1
            return original(self, *args, **kwargs)
        return counted

    # the per-step path clamps latents only (project_latent_); project_ refreshes codes too: either counts
    monkeypatch.setattr(BitState, "project_", counting(BitState.project_))
    monkeypatch.setattr(BitState, "project_latent_", counting(BitState.project_latent_))
    after_backward, after_step = strategy.after_backward, strategy.after_step

    def start(*ctx):
        counter["calls"] = 0  # the optimiser step and the loop's projection follow
        after_backward(*ctx)

    def finish(*ctx):
        after_step(*ctx)
        per_step.append(counter["calls"])
        counter["calls"] = None
        if strategy.pruned:  # retraining after a pruning step
            retrain_steps.append(all(
                bool((states[n].codes[mask] == 0).all()) and bool((p.detach()[mask] == 0).all())
                for n, mask in strategy.pruned.items() for p in [strategy.prunable[n]]))

    monkeypatch.setattr(strategy, "after_backward", start)
    monkeypatch.setattr(strategy, "after_step", finish)
    try:
        engine.run()
    finally:
        engine.close()
    steps_per_epoch = 2  # 32 training samples a task, batch 16
    assert len(retrain_steps) == 2 * steps_per_epoch  # pruning to 10 %, then 20 %, one epoch each, after task 0
    assert all(retrain_steps)
    assert len(per_step) == 2 * steps_per_epoch + len(retrain_steps)
    assert set(per_step) == {len(states)}


def write_idx(path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (MNIST's format): magic, big-endian dims, body."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def digits_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(4), 15)
    train = np.tile(np.arange(15) < 10, 4)
    return x, y, train


@pytest.mark.parametrize("source", ["embedded", "npz", "idx"])
@pytest.mark.slow
def test_every_data_source_reports_what_it_loaded(tmp_path, source):
    """results.json's config.data_source names the source, the shapes and the classes actually loaded."""
    x, y, train = digits_npz(tmp_path)
    if source == "npz":
        data = tmp_path / "digits.npz"
        np.savez(data, x=x, y=y, train=train)
    elif source == "idx":
        data = tmp_path / "idx"
        data.mkdir()
        for prefix, keep in (("train", train), ("t10k", ~train)):
            write_idx(data / f"{prefix}-images-idx3-ubyte", x[keep])
            write_idx(data / f"{prefix}-labels-idx1-ubyte", y[keep])
    else:
        data = None
    run(RunConfig(method="finetune", data=None if data is None else str(data), tasks=2, classes=[0, 1, 2, 3],
                  epochs=0, hidden=[8], quiet=True, out=str(tmp_path / "run")))
    loaded = json.loads((tmp_path / "run" / "results.json").read_text())["config"]["data_source"]
    if source == "embedded":
        assert loaded["source"].startswith("embedded") and loaded["classes"] == list(range(10))
        assert loaded["train_shape"][0] + loaded["test_shape"][0] == 5000
        assert loaded["train_shape"][1:] == [1, 28, 28]
    else:
        assert loaded["source"] == str(data) and loaded["classes"] == [0, 1, 2, 3]
        assert loaded["train_shape"] == [40, 1, 28, 28] and loaded["test_shape"] == [20, 1, 28, 28]
    assert loaded["evaluated_on"] == "test"


@pytest.mark.parametrize("benchmark", ["split-cifar10", "split-cifar100"])
def test_benchmarks_that_need_data_refuse_to_run_without_it(tmp_path, benchmark, monkeypatch):
    """No --data and the data cannot be fetched (an unreachable mirror): FetchError from Engine()
    (CLI: one line naming the URL, exit 1, no run directory); MNIST data: DataError."""
    from bitcl.data.fetch import FetchError
    env = {"BITCL_DATA_ROOT": str(tmp_path / "cache"), "BITCL_DATA_MIRROR": "http://127.0.0.1:9"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(FetchError, match="http://127.0.0.1:9/cifar10"):
        Engine(RunConfig(method="finetune", benchmark=benchmark, epochs=1, hidden=[8], quiet=True))
    done = cli("run", "--method", "finetune", "--benchmark", benchmark, "--out", tmp_path / "r", "--quiet")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "cannot connect" in done.stderr
    assert not (tmp_path / "r").exists()
    x, y, train = digits_npz(tmp_path)
    np.savez(tmp_path / "mnist.npz", x=x, y=y, train=train)
    with pytest.raises(DataError, match=f"{benchmark} needs data with"):
        Engine(RunConfig(method="finetune", benchmark=benchmark, data=str(tmp_path / "mnist.npz"), epochs=1,
                         hidden=[8], quiet=True))
