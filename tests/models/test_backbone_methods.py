"""Every method runs on both paper-scale backbones (a few steps each, real MNIST padded to 32x32)."""
import json

import numpy as np
import pytest
import torch

from bitcl.config import RunConfig
from bitcl.engine import run
from bitcl.models.norm import ContinualBatchNorm2d
from tests.conftest import REPO_DATA, cli

# sample counts kept small: these runs check that each method works on the backbone, not accuracy
METHODS = {"blip": {"samples": 64}, "ewc": {"samples": 64}, "si": {}, "mas": {"samples": 64},
           "anpyc": {"samples": 64}, "dlcft": {}, "finetune": {}}
WIDTHS = {"alexnet": 4, "resnet18": 2}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """Digits 0-3 of data/mnist15k.npz: 160 training and 64 test images."""
    with np.load(f"{REPO_DATA}/mnist15k.npz") as f:
        x, y, train = f["x"], f["y"], f["train"]
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(train & (y < 4)), 160, replace=False),
                                   rng.choice(np.flatnonzero(~train & (y < 4)), 64, replace=False)]))
    out = tmp_path_factory.mktemp("data") / "digits0-3.npz"
    np.savez(out, x=x[keep], y=y[keep], train=train[keep])
    return str(out)


@pytest.mark.parametrize("arch", sorted(WIDTHS))
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.slow
def test_method_runs_on_backbone(method, arch, tiny_npz):
    """Two tasks of one epoch: a full accuracy matrix of valid accuracies; BLIP freezes bits."""
    torch.manual_seed(0)
    config = RunConfig(method=method, arch=arch, width=WIDTHS[arch], pad_to=32, tasks=2, epochs=1, batch_size=32,
                       data=tiny_npz, method_options=METHODS[method], quiet=True)
    result = run(config)
    matrix = result.accuracy_matrix
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert all(0.0 <= a <= 1.0 for row in matrix for a in row)
    if method == "blip":
        assert 0 < result.capacity[0] <= result.capacity[1] < 1


@pytest.mark.slow
def test_cli_alexnet_with_augmentation_freezes_batch_norm(tiny_npz, tmp_path, one_thread):
    """`bitcl run --arch alexnet --pad-to 32 --augment --bn first-task` end to end: results.json records
    the backbone settings, and the task-1 checkpoint holds batch norms frozen by the first-task policy."""
    out = tmp_path / "run"
    done = cli("run", "--method", "blip", "--arch", "alexnet", "--width", "4", "--pad-to", "32", "--augment",
               "--bn", "first-task", "--tasks", "2", "--epochs", "1", "--data", tiny_npz, "--samples", "64",
               "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["arch"] == "alexnet" and results["config"]["bn"] == "first-task"
    assert results["config"]["pad_to"] == 32 and results["config"]["augment"] is True
    from safetensors.torch import load_file
    tensors = load_file(str(out / "checkpoints" / "task-1.safetensors"))
    flags = [v for k, v in tensors.items() if k.endswith(".frozen") and v.dtype == torch.bool]
    assert flags and all(bool(f) for f in flags)


def test_cli_refuses_per_task_norms_in_class_incremental(tiny_npz):
    """--bn per-task without task ids at test time: one-line error, exit status 2."""
    done = cli("run", "--arch", "resnet18", "--bn", "per-task", "--scenario", "class", "--pad-to", "32",
               "--tasks", "2", "--epochs", "1", "--data", tiny_npz)
    assert done.returncode == 2 and "per-task" in done.stderr and "Traceback" not in done.stderr


def test_first_task_policy_is_applied_by_the_engine(tiny_npz):
    """The engine calls ContinualModel.end_task after each task: norms are frozen after task 0."""
    from bitcl.engine import Engine
    config = RunConfig(method="finetune", arch="resnet18", width=2, pad_to=32, tasks=2, epochs=1,
                       data=tiny_npz, quiet=True, bn="first-task")
    engine = Engine(config)
    try:
        engine.run()
    finally:
        engine.close()
    norms = [m for m in engine.model.modules() if isinstance(m, ContinualBatchNorm2d)]
    assert norms and all(n._frozen for n in norms)


@pytest.mark.parametrize("scenario, policy", [("task", "per-task"), ("class", "train"), ("domain", "train")])
def test_auto_policy_resolves_by_scenario_and_is_recorded(scenario, policy):
    """--bn auto (the default): per-task norms where the test gives a task id, plain ones elsewhere;
    the resolved policy, not "auto", is what results.json and the checkpoints' model description hold."""
    config = RunConfig(arch="resnet18", scenario=scenario).resolved()
    assert RunConfig().bn == "auto" and config.bn == policy
    assert RunConfig.from_dict(config.to_dict()).resolved().bn == policy
    assert RunConfig(arch="resnet18", scenario=scenario, bn="first-task").resolved().bn == "first-task"


def test_auto_policy_gives_each_task_its_own_norms(tiny_npz, tmp_path):
    """In a task-incremental run the default policy gives each task its own norms: task 1's training
    leaves task 0's statistics exactly as they were at the end of task 0."""
    from safetensors.torch import load_file

    from bitcl.engine import Engine
    engine = Engine(RunConfig(method="finetune", arch="resnet18", width=2, pad_to=32, tasks=2, epochs=1,
                              data=tiny_npz, quiet=True, out=str(tmp_path / "run")))
    try:
        engine.run()
    finally:
        engine.close()
    norms = [m for m in engine.model.modules() if isinstance(m, ContinualBatchNorm2d)]
    assert norms and all(n.policy == "per-task" and len(n.norms) == 2 for n in norms)
    after_0 = load_file(str(tmp_path / "run" / "checkpoints" / "task-0.safetensors"))
    after_1 = load_file(str(tmp_path / "run" / "checkpoints" / "task-1.safetensors"))
    task0 = [k for k in after_0 if ".norms.0.running_mean" in k]
    task1 = [k for k in after_1 if ".norms.1.running_mean" in k]
    assert task0 and len(task0) == len(task1) == len(norms)
    assert all(torch.equal(after_0[k], after_1[k]) for k in task0)
    assert not all(torch.equal(after_1[k], after_1[k.replace(".norms.0.", ".norms.1.")]) for k in task0)
