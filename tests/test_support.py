"""The support matrix (bitcl.support): every cell that says "runs" trains; every other is refused
by Engine(...) with its one-line reason, before any training."""
import numpy as np
import pytest
import torch

from bitcl.config import RunConfig
from bitcl.data.scenarios import SCENARIOS
from bitcl.engine import Engine
from bitcl.errors import ConfigError
from bitcl.models import backbone_names
from bitcl.strategies import get_strategy, strategy_names
from bitcl.support import RUNS, WEIGHTS, Setting, markdown_table, setup_outcome, support_matrix, tiny_digits

METHODS = strategy_names()
OTHER_ARCHS = [a for a in backbone_names() if a != "mlp"]


def smoke_cells() -> list[Setting]:
    """Every method x scenario x weights on the MLP; every method once on each other backbone
    (task scenario, quantised and float weights alternating over methods)."""
    cells = [Setting(m, s, "mlp", w) for m in METHODS for s in SCENARIOS for w in WEIGHTS]
    for i, method in enumerate(METHODS):
        cls = get_strategy(method)
        scenario = "task" if "task" in cls.scenarios else cls.scenarios[0]
        weights = "quant" if cls.requires_quantized else WEIGHTS[i % 2]
        cells += [Setting(method, scenario, arch, weights) for arch in OTHER_ARCHS]
    return cells


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread (two on a loaded 2-core machine made tiny steps far slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return tiny_digits(per_class=16)  # 64 samples a split: 2 tasks of 2 classes


def smoke_config(cell: Setting) -> RunConfig:
    return RunConfig(method=cell.method, scenario=cell.scenario, arch=cell.arch, backbone=cell.backbone,
                     benchmark="split-mnist", tasks=2, classes=[0, 1, 2, 3], epochs=1, batch_size=16, hidden=[8],
                     width=4, quiet=True)


@pytest.mark.parametrize("cell", smoke_cells(), ids=lambda c: f"{c.method}-{c.scenario}-{c.arch}-{c.backbone}")
def test_every_cell_runs_or_is_refused_before_training(cell, digits):
    """A "runs" cell trains 2 tasks and evaluates every task; a refused one raises ConfigError in Engine()."""
    outcome = setup_outcome(cell, digits)
    if outcome != RUNS:
        with pytest.raises(ConfigError) as refused:
            Engine(smoke_config(cell), data=digits)
        message = str(refused.value)
        # the refusal names what is refused: the method, or the backbone when the data does not fit it
        assert message == outcome and "\n" not in message and (repr(cell.method) in message or cell.arch in message)
        return
    engine = Engine(smoke_config(cell), data=digits)
    try:
        result = engine.run()
    finally:
        engine.close()
    matrix = np.array(result.accuracy_matrix)
    assert matrix.shape == (2, 2) and np.all((matrix >= 0) & (matrix <= 1))
    assert len(result.state_bytes) == 2 and all(b >= 0 for b in result.state_bytes)


def test_declared_refusals_are_exactly_the_mlp_refusals():
    """On the MLP with default options a cell is refused iff the method declares it (scenarios, quant only)."""
    matrix = support_matrix(Setting(m, s, "mlp", w) for m in METHODS for s in SCENARIOS for w in WEIGHTS)
    for cell, outcome in matrix.items():
        cls = get_strategy(cell.method)
        declared = cell.scenario in cls.scenarios and not (cls.requires_quantized and cell.backbone == "float")
        assert (outcome == RUNS) == declared, (cell, outcome)


def test_markdown_table_names_each_refusal_once():
    """The rendered table: a row per method, refusals as numbered notes listed under the table."""
    matrix = {Setting("blip", s, a, w): RUNS if w == "quant" else "method 'blip' needs the quantised backbone"
              for s in ("task", "class") for a in ("mlp", "conv") for w in WEIGHTS}
    matrix.update({Setting("finetune", s, a, w): RUNS for s in ("task", "class") for a in ("mlp", "conv")
                   for w in WEIGHTS})
    matrix[Setting("finetune", "class", "conv", "float")] = "too small"
    table = markdown_table(matrix).splitlines()
    assert table[0] == "| method | task | class | torchrun |"
    assert table[2].startswith("| `blip` | quant weights only [1] | quant weights only [1] |")
    assert table[3].startswith("| `finetune` | runs | conv/quant, mlp/float, mlp/quant; else no [2] | runs |")
    assert table[-2:] == ["- [1] method 'blip' needs the quantised backbone", "- [2] too small"]


def test_torchrun_column_runs_every_backbone():
    """bitcl's batch norms synchronise over ranks: every built-in backbone, batch norm included, runs under
    torchrun (tests/test_distributed.py checks 2 ranks == 1 process on alexnet and resnet18)."""
    from bitcl.support import data_parallel_outcome
    assert {arch: data_parallel_outcome("finetune", arch) for arch in backbone_names()} == \
        {arch: RUNS for arch in backbone_names()}


def test_torchrun_refuses_a_torch_batch_norm():
    """A backbone with a plain torch batch norm (per-shard statistics under DDP) is refused with one line."""
    from torch import nn

    from bitcl.models.norm import ContinualBatchNorm2d
    from bitcl.support import data_parallel_refusal
    assert data_parallel_refusal("mine", nn.Sequential(nn.Conv2d(1, 2, 3), ContinualBatchNorm2d(2))) is None
    refusal = data_parallel_refusal("mine", nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert refusal.startswith("--arch mine has a torch batch norm") and "\n" not in refusal
