"""bitcl.fit and strategy objects in users' loops: same results and files as the CLI, refusals up front."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import bitcl
from bitcl.api import HeadedModel, benchmark_tasks, fit, make_strategy
from bitcl.api_context import DataContext
from bitcl.errors import ConfigError, DataError, TrainingDiverged
from bitcl.models import build_model
from bitcl.quant import bit_states
from tests.conftest import cli

from .contract import check_run_directory, checkpoint_tensors

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(epochs=1, lr=3e-3, batch_size=64, seed=0)
CLI_FAST = ["--hidden", "16", "--epochs", "1", "--lr", "3e-3", "--batch-size", "64", "--seed", "0", "--quiet",
            "--classes", "0,1,2,3", "--tasks", "2"]


@pytest.fixture(scope="module")
def split_tasks():
    return benchmark_tasks("split-mnist", scenario="task", seed=0)


def _user_backbone(bits=20):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
    bitcl.quantize_(backbone, bitcl.BitConfig(bits=bits, range="fixed"))
    return backbone


@pytest.mark.parametrize("method", ["blip", "siu"])
def test_fit_reproduces_the_cli_bit_for_bit(method, tmp_path):
    """fit on bitcl's own model and the CLI's tasks gives the CLI's accuracy matrix, capacity and
    checkpoints exactly (SIU: the independent-minibatch service matches too); both pass one contract check."""
    done = cli("run", "--method", method, "--out", tmp_path / "cli", *CLI_FAST)
    assert done.returncode == 0, done.stderr
    theirs = check_run_directory(tmp_path / "cli", 2)
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), [2] * 2, "task", "quant", 20, [16])
    tasks = benchmark_tasks("split-mnist", scenario="task", tasks=2, seed=0, classes=[0, 1, 2, 3])
    result = fit(model, tasks, method, out=str(tmp_path / "fit"), **FAST)
    ours = check_run_directory(tmp_path / "fit", 2)
    assert ours["accuracy_matrix"] == theirs["accuracy_matrix"] == result.accuracy_matrix
    assert ours["capacity"] == theirs["capacity"] and ours["memory"] == theirs["memory"]
    assert ours["config"]["loop"] == "bitcl.fit" and ours["config"]["method_options"] == theirs["config"]["method_options"]
    a = checkpoint_tensors(tmp_path / "cli" / "checkpoints" / "task-1.safetensors")
    b = checkpoint_tensors(tmp_path / "fit" / "checkpoints" / "task-1.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fit_with_heads_protects_the_backbone_only(split_tasks, tmp_path):
    """A user's quantised backbone with heads=[...] (DataLoaders): BLIP freezes backbone bits, heads stay
    float and trainable, and the run directory meets the contract."""
    backbone = _user_backbone()
    heads = [nn.Linear(32, 2) for _ in range(3)]
    loaders = [(DataLoader(tr, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(t)),
                DataLoader(te, batch_size=500)) for t, (tr, te) in enumerate(split_tasks[:3])]
    result = fit(backbone, loaders, "blip", heads=heads, options={"fisher_prior": 1e-8}, out=str(tmp_path / "r"),
                 **FAST)
    res = check_run_directory(tmp_path / "r", 3)
    assert res["scenario"] == "task" and res["config"]["heads"] == 3
    assert 0 < result.capacity[0] < result.capacity[-1] < 1
    assert set(result.capacity_per_layer[-1]) == {"backbone.1.weight", "backbone.1.bias"}
    matrix = result.accuracy_matrix
    assert matrix[-1][0] >= matrix[0][0] - 0.02 and min(matrix[-1]) > 0.6  # task 0 kept, every task learnt


@pytest.mark.slow
def test_fit_domain_scenario_with_ewc_on_a_float_model():
    """Without heads (domain scenario), EWC protects every trainable parameter of a plain float model."""
    tasks = [(Subset(tr, range(1500)), te) for tr, te in
             benchmark_tasks("permuted-mnist", scenario="domain", tasks=2, seed=0)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    result = fit(model, tasks, "ewc", options={"samples": 200, "fisher": "sampled"}, **FAST)
    assert result.to_json()["scenario"] == "domain" and "capacity" not in result.to_json()
    assert result.state_bytes[-1] > 2 * sum(p.numel() * 4 for p in model.parameters())  # Fisher + anchor
    assert min(result.accuracy_matrix[-1]) > 0.2  # both tasks well above chance (0.1) on 1,500 digits


def test_own_loop_strategy_hooks_keep_frozen_bits(split_tasks):
    """A strategy object driven by hand (make_strategy + DataContext): after end_task froze bits, further
    steps of the user's loop never change a frozen bit."""
    backbone = _user_backbone(bits=12)
    head = nn.Linear(32, 2)
    net = HeadedModel(backbone, [head])
    strategy = make_strategy("blip", net, num_tasks=2, scenario="task", fisher_prior=1e-8)
    train = split_tasks[0][0]
    ctx = DataContext(net, train, 0, strategy.info, forward=lambda x: net(x, 0))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = train.tensors[0][:256], train.tensors[1][:256]
    strategy.before_task(ctx)
    for _ in range(3):
        opt.zero_grad()
        (strategy.loss(net(x, 0), y) / len(y)).backward()
        opt.step()
        ctx.project()
    strategy.end_task(ctx)
    states = dict(bit_states(net))
    top = {n: (s.offset_codes() >> (s.bits - s.frozen.long())).clone() for n, s in states.items()}
    assert sum(s.frozen_bits() for s in states.values()) > 0
    for _ in range(3):
        opt.zero_grad()
        (strategy.loss(net(x, 0), 1 - y) / len(y)).backward()  # flipped labels: a large push
        opt.step()
        ctx.project()
    for n, s in states.items():
        assert torch.equal(s.offset_codes() >> (s.bits - s.frozen.long()), top[n]), n


@pytest.mark.slow
def test_example_own_loop_runs():
    """examples/own_loop.py runs to the end on the embedded MNIST and BLIP freezes more bits each task."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "own_loop.py")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("after task")]
    assert len(lines) == 5
    frozen = [float(line.rsplit(" ", 1)[1].rstrip("%")) for line in lines]
    assert frozen == sorted(frozen) and frozen[0] > 0
    first_task_final = float(lines[-1].split("..4 ")[1].split()[0])
    assert first_task_final > 0.9  # task 0 is not forgotten


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(method="blip"), ConfigError, "needs Bit layers"),
    (dict(method="joint"), ConfigError, "cannot run in bitcl.fit"),
    (dict(method="dlcft"), ConfigError, "cannot run in bitcl.fit"),
    (dict(method="ewc", scenario="task"), ConfigError, "heads="),
    (dict(method="ewc", heads=[nn.Linear(32, 2)]), ConfigError, "one nn.Module per task"),
    (dict(method="ewc", lr=float("nan")), ConfigError, "lr"),
    (dict(method="ewc", options={"c": -1.0}), ConfigError, "--c"),
    (dict(method="nope"), ConfigError, "unknown method"),
    (dict(method="ewc", scenario="data"), ConfigError, "scenario"),
])
def test_bad_arguments_are_refused_before_training(kwargs, error, needle, split_tasks):
    """Each unsupported or invalid setting raises the precise bitcl error naming it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with pytest.raises(error, match=needle):
        fit(model, split_tasks[:2], **kwargs)


def test_bad_task_data_is_refused(split_tasks):
    """Malformed tasks raise ConfigError / DataError: not pairs, empty, or items that are not (x, y) tensors."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with pytest.raises(ConfigError, match="pairs"):
        fit(model, [], "finetune")
    with pytest.raises(ConfigError, match="pair"):
        fit(model, [split_tasks[0][0]], "finetune")
    with pytest.raises(DataError, match="empty"):
        fit(model, [(_Items([]), split_tasks[0][1])], "finetune")
    with pytest.raises(DataError, match="integer class"):
        fit(model, [(_Items([(torch.zeros(1, 28, 28), torch.tensor(0.5))]), split_tasks[0][1])], "finetune")


def test_nan_loss_names_task_epoch_and_step(split_tasks):
    """A diverging run raises TrainingDiverged naming task, epoch and step."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    x, y = split_tasks[0][0].tensors
    poisoned = TensorDataset(torch.where(torch.arange(len(y)).view(-1, 1, 1, 1) == 70, float("nan"), x), y)
    with pytest.raises(TrainingDiverged, match=r"task 0, epoch 0, step \d+: loss is nan"):
        fit(model, [(poisoned, split_tasks[0][1])], "finetune", lr_schedule="none")


@pytest.mark.slow
def test_resume_continues_an_interrupted_fit_exactly(split_tasks, tmp_path):
    """A fit interrupted after task 0 and resumed gives the uninterrupted run's results, bit for bit."""
    def run(tasks, out, resume=False):
        torch.manual_seed(0)
        model = build_model("mlp", (1, 28, 28), [2] * 2, "task", "quant", 20, [32])
        return fit(model, tasks, "blip", out=str(out), resume=resume, **FAST)

    whole = run(split_tasks[:2], tmp_path / "whole")

    class Broken(Dataset):
        def __len__(self):
            return len(split_tasks[1][0])

        def __getitem__(self, i):
            raise KeyboardInterrupt  # the process is stopped during task 1

    with pytest.raises(KeyboardInterrupt):
        run([split_tasks[0], (Broken(), split_tasks[1][1])], tmp_path / "cut")
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = run(split_tasks[:2], tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == whole.accuracy_matrix and resumed.capacity == whole.capacity
    check_run_directory(tmp_path / "cut", 2)


class _Stream(torch.utils.data.IterableDataset):
    """Items of a TensorDataset, streamed in order (no length, no indexing)."""

    def __init__(self, data, n):
        self.data, self.n = data, n

    def __iter__(self):
        return (self.data[i] for i in range(self.n))


def test_iterable_datasets_serve_importance_and_independent_batches(split_tasks):
    """Streams without a length: SIU (independent minibatches) and EWC (importance subset) run, cosine is
    refused (its step count is unknown), and EWC's importance comes from the stream's first items."""
    train, test = split_tasks[0]
    stream = [(_Stream(train, 300), test), (_Stream(split_tasks[1][0], 300), split_tasks[1][1])]
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with pytest.raises(ConfigError, match="lr_schedule"):
        fit(model, stream, "siu", **FAST)
    fit(model, stream, "siu", lr_schedule="none", **FAST)
    result = fit(model, stream, "ewc", lr_schedule="none", options={"samples": 100, "fisher": "sampled"}, **FAST)
    assert result.state_bytes[-1] > 0 and len(result.accuracy_matrix) == 2


@pytest.mark.parametrize("wrap", [lambda d: d, lambda d: DataLoader(d, batch_size=64), lambda d: Subset(d, range(len(d)))])
def test_labels_that_do_not_fit_the_head_name_task_labels_and_head_size(split_tasks, wrap):
    """Task 1 of split-MNIST relabelled 2/3 for a 2-way head: DataError naming the task, its labels and the head
    size (not torch's 'IndexError: Target 2 is out of bounds'), for a TensorDataset (checked before the first
    update), a DataLoader and a Subset (checked per batch); task 0 trained and evaluated as usual first."""
    x, y = split_tasks[1][0].tensors
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:64]  # both classes
    shifted = wrap(TensorDataset(x[keep], y[keep] + 2))
    heads = [nn.Linear(32, 2) for _ in range(2)]
    with pytest.raises(DataError, match=r"^tasks\[1\] train: labels 2, 3 do not fit the model's 2 outputs for task 1 "
                                        r"\(labels must lie in 0\.\.1;"):
        fit(_user_backbone(), [split_tasks[0], (shifted, split_tasks[1][1])], "blip", heads=heads, **FAST)


def test_labels_a_collate_function_changes_are_checked_batch_by_batch(split_tasks):
    """A loader over a TensorDataset whose collation shifts the labels to 2/3: the dataset's own labels (0/1)
    fit the head, the batches' do not; the per-batch check (kept for any batches that are not the dataset's
    rows) gives the DataError before any update of task 1."""
    def shifted(items):
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]) + 2

    train = DataLoader(split_tasks[1][0], batch_size=64, collate_fn=shifted)
    heads = [nn.Linear(32, 2) for _ in range(2)]
    with pytest.raises(DataError, match=r"^tasks\[1\] train: labels 2(, 3)? do not fit the model's 2 outputs"):
        fit(_user_backbone(), [split_tasks[0], (train, split_tasks[1][1])], "blip", heads=heads, **FAST)
