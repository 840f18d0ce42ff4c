"""Importance regularisers: measures match slow references; penalties vanish at θ*; options checked."""
import pytest
import torch
from torch import nn

from bitcl.config import RunConfig
from bitcl.engine import Engine, run
from bitcl.errors import ConfigError
from bitcl.importance import PathIntegral, layers_of, output_sensitivity_sums


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 5))


def slow_measure(model, x, measure):
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for n in range(len(x)):
        p = torch.softmax(model(x[n:n + 1]), 1)[0]
        if measure == "af":
            for c in range(len(p)):
                grads = torch.autograd.grad(torch.log(p[c]), list(params.values()), retain_graph=True)
                for k, g in zip(params, grads):
                    total[k] += p[c].detach() * g.abs()
            continue
        q = p.pow(2).sum() if measure == "mas" else p.max().pow(2)
        for k, g in zip(params, torch.autograd.grad(q, list(params.values()))):
            total[k] += g.abs()
    return total


@pytest.mark.parametrize("measure", ["mas", "masx", "af"])
def test_output_sensitivity_matches_per_sample_loop(measure):
    """MAS, MASX and AF from vectorised per-sample gradients equal a sample-by-sample loop."""
    model = tiny()
    x = torch.randn(7, 1, 8, 8)
    layers = layers_of(model, [n for n, _ in model.named_parameters()])
    fast = output_sensitivity_sums(model, layers, model, x, measure)
    slow = slow_measure(model, x, measure)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["si", "siu", "sib", "sos"])
def test_path_integral_matches_hand_computation(kind):
    """ω, Δ and the SOS running mean follow their formulas over a few explicit SGD steps."""
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    tracker = PathIntegral({"w": w}, kind, xi=0.1, alpha=1.0, decay=0.9)
    tracker.start_task()
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.4])]
    indep = [torch.tensor([0.4, -0.5]), torch.tensor([0.1, 0.0])]
    omega, v = torch.zeros(2), torch.zeros(2)
    for g, h in zip(grads, indep):
        w.grad = g.clone()
        tracker.before_step({"w": h})
        before = w.detach().clone()
        with torch.no_grad():
            w -= 0.1 * g
        tracker.after_step()
        used = {"si": g, "siu": h, "sib": g - h, "sos": None}[kind]
        if used is not None:
            omega -= used * (w.detach() - before)
        v = 0.9 * v + 0.1 * (g - h).pow(2)
    got = tracker.importance()["w"]
    if kind == "sos":
        expected = (v / (1 - 0.9 ** 2)).sqrt()
    else:
        delta = w.detach() - torch.tensor([1.0, -2.0])
        expected = torch.clamp(omega / (delta.pow(2) + 0.1), min=0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", ["ewc", "si", "mas", "rewc", "sos"])
def test_penalty_is_zero_at_the_anchor_and_positive_away(method, small_npz):
    """After a task the penalty is 0 at θ* and grows when the parameters move."""
    engine = Engine(RunConfig(method=method, data=small_npz, epochs=1, hidden=[32], quiet=True, tasks=5))
    task = engine.scenario.tasks[0]
    ctx = engine.context(task)
    engine.strategy.before_task(ctx)
    engine.train_task(task)
    engine.strategy.end_task(ctx)
    assert float(engine.strategy.penalty().detach()) == 0.0
    with torch.no_grad():
        for p in engine.strategy.params.values():
            p.add_(0.01)
    assert float(engine.strategy.penalty().detach()) > 0


def test_heads_of_multi_head_models_are_not_regularised(small_npz):
    """Only backbone parameters carry importance in task-incremental learning."""
    engine = Engine(RunConfig(method="ewc", data=small_npz, epochs=0, hidden=[16], quiet=True))
    assert engine.strategy.params and not any(n.startswith("heads.") for n in engine.strategy.params)
    shared = Engine(RunConfig(method="ewc", scenario="domain", data=small_npz, epochs=0, hidden=[16], quiet=True))
    assert any(n.startswith("heads.0") for n in shared.strategy.params)


@pytest.mark.slow
def test_siu_second_minibatch_is_independent(small_npz):
    """SIU draws g' from its own generator: the training order is finetune's, and g' differs from g."""
    common = dict(data=small_npz, epochs=1, hidden=[32], quiet=True, tasks=5, backbone="float")
    base = run(RunConfig(method="finetune", **common))
    siu = run(RunConfig(method="siu", method_options={"c": 0.0}, **common))
    assert base.accuracy_matrix == siu.accuracy_matrix  # same batches, same steps (c = 0)
    engine = Engine(RunConfig(method="siu", **common))
    task = engine.scenario.tasks[0]
    engine.strategy.before_task(engine.context(task))
    engine.train_task(task)
    g_prime = engine.trainer.independent_gradient(engine.strategy.params)
    g_again = engine.trainer.independent_gradient(engine.strategy.params)
    key = next(iter(g_prime))
    assert not torch.equal(g_prime[key], g_again[key])  # a new minibatch each time


@pytest.mark.slow
def test_separate_ewc_memory_grows_and_others_stay_constant(small_npz):
    """state_bytes: ewc --mode separate and joint grow with tasks; online EWC and SI do not."""
    common = dict(data=small_npz, epochs=1, hidden=[16], quiet=True)
    sep = run(RunConfig(method="ewc", **common)).state_bytes
    online = run(RunConfig(method="ewc", method_options={"mode": "online"}, **common)).state_bytes
    si = run(RunConfig(method="si", **common)).state_bytes
    assert sep == sorted(sep) and sep[-1] - 8 == 5 * (sep[0] - 8)  # 8 bytes count the tasks seen
    assert len(set(online)) == 1 and len(set(si)) == 1
    joint = run(RunConfig(method="joint", **common)).state_bytes  # keeps every past task's data
    assert joint == sorted(joint) and joint[-1] > 4 * joint[0]


@pytest.mark.parametrize("method, options, needle", [
    ("ewc", {"mode": "sometimes"}, "--mode"),
    ("ewc", {"gamma": 2.0}, "--gamma"),
    ("sos", {"alpha": 1.5}, "--alpha"),
    ("si", {"xi": 0.0}, "--xi"),
    ("mas", {"c": -1.0}, "--c"),
    ("si", {"fisher": "exact"}, "no option"),
])
def test_bad_options_are_refused(method, options, needle):
    """Out-of-range or unknown options raise ConfigError naming the flag."""
    with pytest.raises(ConfigError, match=needle):
        Engine(RunConfig(method=method, method_options=options, epochs=0, hidden=[8], quiet=True))
