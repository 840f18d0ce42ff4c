"""DLCFT learns on the conv backbones from a random initialisation (issue 22).

Two task-incremental tasks of five digits (1,600 real digits, 32x32, 1 epoch), a head each. Before
the fix the linearised head was trained on batch-statistics features and evaluated on running-
statistics features, of a random network, with a random head to unlearn first. Now batch norms are
fixed at θ0's statistics, new heads start at zero and, on the ResNet-18, θ0 is the first-task
warm-up (recorded in the results)."""
import pytest

from bitcl.config import RunConfig
from bitcl.engine import Engine

WELL_ABOVE_CHANCE = 0.35  # chance is 0.2 on a five-digit task; ~190 test digits a task: sd 0.03 at chance
WARMUP = {"alexnet": "none", "resnet18": "first-task"}  # --warmup auto


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_two_task_dlcft_run_learns_each_task_on_conv_backbones(arch, small_npz, one_thread):
    config = RunConfig(method="dlcft", arch=arch, benchmark="split-mnist", data=small_npz, tasks=2, epochs=1,
                       pad_to=32, seed=0, quiet=True)
    result = Engine(config).run()
    diagonal = [result.accuracy_matrix[t][t] for t in range(2)]
    assert min(diagonal) >= WELL_ABOVE_CHANCE, diagonal
    assert result.extra["linearisation_point"] == {"warmup": WARMUP[arch], "pretrained": False,
                                                   "warmup_epochs": None}


def test_warmup_is_refused_under_torchrun_and_auto_follows_the_backbone(small_npz):
    from bitcl.errors import ConfigError
    from bitcl.strategies.context import RunInfo
    from bitcl.strategies.dlcft import Dlcft, DlcftOptions

    class World:  # a stand-in for a two-rank process group: only `enabled` is read at construction
        enabled = True

    def built(arch, **options):
        return Engine(RunConfig(method="dlcft", arch=arch, data=small_npz, classes=[0, 1, 2, 3], tasks=2, epochs=0,
                                pad_to=32, width=4, hidden=[8], quiet=True, method_options=options))

    assert built("mlp").strategy.warmup == built("conv").strategy.warmup == "none"
    engine = built("resnet18")
    assert engine.strategy.warmup == "first-task"
    with pytest.raises(ConfigError, match="torchrun"):
        Dlcft(DlcftOptions(), engine.model, RunInfo(2, "task", world=World()))
    pretrained = Dlcft(DlcftOptions(), engine.model, RunInfo(2, "task", pretrained=True))
    assert pretrained.warmup == "none"


def test_linearised_resnet_is_one_function_in_training_and_evaluation(small_npz, one_thread):
    """Training mode gives the outputs of evaluation mode and moves no batch-norm statistic (the
    cause of issue 22: the head was trained on batch-statistics features, evaluated on others)."""
    import torch
    engine = Engine(RunConfig(method="dlcft", arch="resnet18", width=4, data=small_npz, classes=[0, 1, 2, 3], tasks=2,
                              epochs=0, pad_to=32, quiet=True, method_options={"warmup": "none"}))
    task = engine.scenario.tasks[0]
    engine.strategy.before_task(engine.task_context(0))  # θ0's statistics from the task's data
    stats = {k: v.clone() for k, v in engine.model.state_dict().items() if "running" in k}
    # --bn auto is per-task here: task 0's norms are calibrated now, task 1's at task 1
    assert engine.config.bn == "per-task"
    assert all(float(v.abs().sum()) > 0 for k, v in stats.items() if "running_mean" in k and ".norms.0." in k)
    x = task.inputs(task.x_train[:32])
    net = engine.strategy.linearized
    with torch.no_grad():
        net.train()
        trained = net(x, 0)
        net.eval()
        evaluated = net(x, 0)
        one = net(x[:1], 0)
    torch.testing.assert_close(trained, evaluated)
    torch.testing.assert_close(one, evaluated[:1])  # no sample depends on the rest of its batch
    assert all(torch.equal(v, engine.model.state_dict()[k]) for k, v in stats.items())
