"""bitcl's methods as Avalanche plugins on an Avalanche benchmark built from the embedded MNIST."""
import pytest
import torch
from torch import nn

import bitcl
from bitcl.api import benchmark_tasks, fit
from bitcl.errors import ConfigError
from bitcl.quant import bit_states

LR, BATCH, PRIOR = 0.05, 32, 1e-8

# Bound by _import_avalanche when the first test of this module runs.
avalanche = tensors_benchmark = accuracy_metrics = Naive = EvaluationPlugin = TwoHeads = None


@pytest.fixture(scope="module", autouse=True)
def _import_avalanche():
    """Import Avalanche when this module's tests run, not when pytest collects the module: the import
    takes about 10 s of CPU, and every pytest-xdist worker collects every module."""
    global avalanche, tensors_benchmark, accuracy_metrics, Naive, EvaluationPlugin, TwoHeads
    avalanche = pytest.importorskip("bitcl.avalanche", reason="avalanche-lib not installed (extra: bitcl[avalanche])")
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import MultiTaskModule
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    class _TwoHeads(MultiTaskModule):
        """A quantised MLP backbone and one head per task label, as Avalanche's multi-task models route them."""

        def __init__(self, backbone, heads):
            super().__init__()
            self.backbone, self.heads = backbone, nn.ModuleList(heads)

        def forward_single_task(self, x, task_label):
            return self.heads[int(task_label)](self.backbone(x))

    TwoHeads = _TwoHeads


def _parts(seed):
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
    bitcl.quantize_(backbone, bitcl.BitConfig(bits=20, range="fixed"))
    return backbone, [nn.Linear(32, 2) for _ in range(2)]


@pytest.fixture(scope="module")
def tasks():
    return benchmark_tasks("split-mnist", scenario="task", tasks=2, seed=0, classes=[0, 1, 2, 3])


def _avalanche_blip(tasks, seed):
    bench = tensors_benchmark(train_tensors=[tr.tensors for tr, _ in tasks], test_tensors=[te.tensors for _, te in tasks],
                              task_labels=[0, 1], complete_test_set_only=False)
    model = TwoHeads(*_parts(seed))
    plugin = avalanche.BLIPPlugin(fisher_prior=PRIOR, seed=seed)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    torch.manual_seed(seed)
    naive = Naive(model, torch.optim.SGD(model.parameters(), lr=LR), nn.CrossEntropyLoss(), train_mb_size=BATCH,
                  train_epochs=1, eval_mb_size=500, plugins=[plugin], evaluator=evaluator, device="cpu")
    snapshots = []
    for experience in bench.train_stream:
        naive.train(experience)
        snapshots.append({n: (s.frozen.clone(), s.codes.clone()) for n, s in bit_states(model)})
    metrics = naive.eval(bench.test_stream)
    accs = [metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"] for t in range(2)]
    return accs, plugin.capacity(), snapshots, model


def test_blip_plugin_freezes_bits_and_never_changes_a_frozen_one(tasks):
    """Through Naive + BLIPPlugin: bits freeze after each experience, and training on experience 1 leaves
    every bit frozen after experience 0 as it was; Avalanche's accuracy metrics are reported."""
    accs, capacity, (after0, after1), _ = _avalanche_blip(tasks, seed=0)
    assert capacity > 0 and all(0.0 <= a <= 1.0 for a in accs)
    for name, (frozen0, codes0) in after0.items():
        frozen1, codes1 = after1[name]
        assert bool((frozen1 >= frozen0).all()) and int(frozen0.sum()) > 0
        k = frozen0.long()
        top0 = (codes0.long() + 2 ** 19) >> (20 - k)
        top1 = (codes1.long() + 2 ** 19) >> (20 - k)
        assert torch.equal(top0, top1), name


def test_blip_through_avalanche_matches_blip_through_bitcl_fit(tasks):
    """Same tasks, seeds, initial models and SGD: over 3 seeds, Avalanche + BLIPPlugin and bitcl.fit reach the
    same mean final accuracy (within 0.04: the batch orders differ, and one seed alone spreads by +-0.05)
    and the same frozen capacity (within 5% relative)."""
    ours, theirs = [], []
    for seed in range(3):
        accs, capacity, _, _ = _avalanche_blip(tasks, seed)
        theirs.append((sum(accs) / 2, capacity))
        backbone, heads = _parts(seed)
        result = fit(backbone, tasks, "blip", heads=heads, options={"fisher_prior": PRIOR}, optimizer="sgd", lr=LR,
                     lr_schedule="none", batch_size=BATCH, epochs=1, seed=seed)
        ours.append((result.acc, result.capacity[-1]))
    mean = [sum(v) / 3 for v in zip(*ours)]
    other = [sum(v) / 3 for v in zip(*theirs)]
    assert other[0] == pytest.approx(mean[0], abs=0.04)
    assert other[1] == pytest.approx(mean[1], rel=0.05)


@pytest.mark.parametrize("plugin_cls, options", [
    ("EWCPlugin", {"c": 100.0, "samples": 200, "fisher": "sampled"}), ("SIPlugin", {}), ("MASPlugin", {"samples": 200}),
    ("SIUPlugin", {}), ("SOSPlugin", {}), ("REWCPlugin", {"samples": 200, "fisher": "sampled"}),
])
def test_regulariser_plugins_run_and_build_importance(plugin_cls, options, tasks):
    """Every regulariser plugin trains through Naive and ends each experience with a non-zero importance."""
    torch.manual_seed(0)
    model = TwoHeads(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU()), [nn.Linear(16, 2) for _ in range(2)])
    keep = torch.randperm(len(tasks[0][0]), generator=torch.Generator().manual_seed(0))[:300]  # both classes
    bench = tensors_benchmark(train_tensors=[(tr.tensors[0][keep], tr.tensors[1][keep]) for tr, _ in tasks],
                              test_tensors=[te.tensors for _, te in tasks], task_labels=[0, 1],
                              complete_test_set_only=False)
    plugin = getattr(avalanche, plugin_cls)(**options)
    naive = Naive(model, torch.optim.SGD(model.parameters(), lr=LR), nn.CrossEntropyLoss(), train_mb_size=BATCH,
                  train_epochs=1, plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]), device="cpu")
    for experience in bench.train_stream:
        naive.train(experience)
    omegas = [v for k, v in plugin.strategy.state.items() if k.startswith("omega/")]
    assert omegas and sum(float(o.abs().sum()) for o in omegas) > 0
    assert int(plugin.strategy.state["tasks_seen"]) == 2


def test_plugins_refuse_what_avalanche_cannot_serve():
    """Methods needing retraining, replay or their own loss, and BLIP on a float model, raise ConfigError."""
    for method in ("anpyc", "joint", "dlcft"):
        with pytest.raises(ConfigError):
            avalanche.BitclPlugin(method)
    with pytest.raises(ConfigError, match="--fisher-prior"):
        avalanche.BLIPPlugin(fisher_prior=-1.0)
    model = TwoHeads(nn.Sequential(nn.Flatten(), nn.Linear(784, 4)), [nn.Linear(4, 2)])
    naive = Naive(model, torch.optim.SGD(model.parameters(), lr=LR), nn.CrossEntropyLoss(),
                  plugins=[avalanche.BLIPPlugin()], evaluator=EvaluationPlugin(loggers=[]), device="cpu")
    bench = tensors_benchmark(train_tensors=[(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))],
                              test_tensors=[(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))],
                              task_labels=[0])
    with pytest.raises(ConfigError, match="Bit layers"):
        naive.train(bench.train_stream[0])


def _two_task_benchmark(tasks):
    return tensors_benchmark(train_tensors=[tr.tensors for tr, _ in tasks], test_tensors=[te.tensors for _, te in tasks],
                             task_labels=[0, 1], complete_test_set_only=False)


def test_multi_head_usage_keeps_old_experiences_well_above_chance(tasks):
    """The documented usage: a task-incremental stream needs one head per task label, e.g. avalanche's
    MTSimpleMLP (a MultiTaskModule whose `classifier` is a MultiHeadClassifier, growing a head per task);
    quantise all but the heads, train with Naive + BLIPPlugin. Old experiences stay far above chance (0.5)."""
    from avalanche.models import MTSimpleMLP
    torch.manual_seed(0)
    model = MTSimpleMLP(input_size=28 * 28, hidden_size=64)
    bitcl.quantize_(model, bitcl.BitConfig(bits=20, skip=("classifier",)))  # the heads stay float, per task
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1, eval_mb_size=500,
                     plugins=[avalanche.BLIPPlugin(fisher_prior=PRIOR)],
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]), device="cpu")
    bench = _two_task_benchmark(tasks)
    for experience in bench.train_stream:
        strategy.train(experience)
    metrics = strategy.eval(bench.test_stream)
    accs = [metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"] for t in range(2)]
    assert accs[0] > 0.9 and accs[1] > 0.6, accs  # the old experience kept; the new one learned (chance: 0.5)


def test_single_head_model_in_a_task_incremental_stream_is_refused(tasks):
    """The README's old snippet (one shared head, Naive + BLIPPlugin) scored 0.0 on every old experience,
    silently: now ConfigError before training, naming the task labels and the fix; scenario='domain' (one
    shared head on purpose) is still accepted."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 2))
    bitcl.quantize_(model, bitcl.BitConfig(bits=20, skip=("3",)))
    bench = _two_task_benchmark(tasks)

    def naive(plugin):
        return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1, plugins=[plugin],
                     evaluator=EvaluationPlugin(loggers=[]), device="cpu")

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"^BLIPPlugin: the stream has task labels \[0, 1\] but the model "
                                          r"\(Sequential\) has one shared head .*use a multi-head model"):
        naive(avalanche.BLIPPlugin(fisher_prior=PRIOR)).train(bench.train_stream[0])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before any step
    naive(avalanche.BLIPPlugin(fisher_prior=PRIOR, scenario="domain")).train(bench.train_stream[0])


def _itemwise(dataset):
    """An Avalanche dataset's items read one by one and collated, as a DataLoader over it would."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item[0] for item in items]), torch.tensor([int(item[1]) for item in items])


def test_tensor_rows_of_an_experience_are_its_items(tasks):
    """A tensors_benchmark experience, and a shuffled subset of one, read as tensor rows: exactly the
    items Avalanche's __getitem__ gives, in the same order."""
    from bitcl.avalanche.plugins import _tensor_rows
    dataset = _two_task_benchmark(tasks).train_stream[1].dataset
    for data in (dataset, dataset.subset(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
                                         [:100].tolist())):
        rows = _tensor_rows(data)
        assert rows is not None
        x, y = _itemwise(data)
        assert torch.equal(rows.tensors[0], x) and torch.equal(rows.tensors[1], y)


def test_tensor_rows_refuse_transformed_items(tasks):
    """Items under a transform are not their rows: no tensor view (the plugin reads them item by item)."""
    from bitcl.avalanche.plugins import _tensor_rows
    dataset = _two_task_benchmark(tasks).train_stream[0].dataset
    assert _tensor_rows(dataset.replace_current_transform_group((lambda v: v * 2, None))) is None
    assert _tensor_rows(dataset.replace_current_transform_group((None, lambda v: v + 1))) is None


def test_blip_plugin_is_the_same_with_and_without_tensor_rows(tasks, monkeypatch):
    """The fast reading changes no bit: the codes and frozen counts after each of two experiences equal
    those of the item-wise reading."""
    import bitcl.avalanche.plugins as plugins
    _, _, fast, _ = _avalanche_blip(tasks, seed=1)
    calls = []
    monkeypatch.setattr(plugins, "_tensor_rows", lambda dataset: calls.append(dataset) and None)
    _, _, slow, _ = _avalanche_blip(tasks, seed=1)
    assert len(calls) == 2  # one per experience: the item-wise path ran
    for after_fast, after_slow in zip(fast, slow):
        for name, (frozen, codes) in after_fast.items():
            assert torch.equal(frozen, after_slow[name][0]) and torch.equal(codes, after_slow[name][1]), name
