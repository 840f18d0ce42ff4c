"""fit's fast path for TensorDatasets (and plain DataLoaders over one): batches cut from the tensors by
index must be exactly the DataLoader's, and leave every RNG (the loader's generator, the global one
that dropout reads) where iterating the DataLoader leaves it."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from bitcl.api import FitConfig, _FitLoop
from bitcl.api_context import plain_tensors
from bitcl.strategies import RunInfo, get_strategy, make_options


def _data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 3, generator=g), torch.randint(0, 5, (n,), generator=g))


def _loop(tasks, batch_size: int) -> _FitLoop:
    config = FitConfig(method="finetune", scenario="domain", seed=7, epochs=1, batch_size=batch_size, lr=0.1,
                       optimizer="sgd", momentum=0.0, lr_schedule="none", eval_batch_size=batch_size, device="cpu")
    net = torch.nn.Linear(3, 5)
    cls = get_strategy("finetune")
    strategy = cls(make_options(cls, {}), net, RunInfo(len(tasks), "domain"))
    return _FitLoop(net, strategy, tasks, config, "sgd", task_aware=False)


def _drain(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == xb.dtype and ya.dtype == yb.dtype


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 70), batch=st.integers(1, 32), shuffle=st.booleans(), own_generator=st.booleans(),
       drop_last=st.booleans())
def test_fast_batches_of_a_dataloader_are_the_loaders(n, batch, shuffle, own_generator, drop_last):
    data = _data(n)

    def loader():
        generator = torch.Generator().manual_seed(3) if own_generator else None
        return DataLoader(data, batch_size=batch, shuffle=shuffle, generator=generator, drop_last=drop_last)

    plain, fast = loader(), loader()
    loop = _loop([(fast, fast)], batch)
    torch.manual_seed(11)
    expected = _drain(plain)
    expected_global = torch.get_rng_state()
    torch.manual_seed(11)
    got = _drain(loop._batches(fast, 0, 0, "order"))
    _same(got, expected)
    assert torch.equal(torch.get_rng_state(), expected_global)
    if own_generator:
        assert torch.equal(plain.generator.get_state(), fast.generator.get_state())


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 70), batch=st.integers(1, 32))
def test_fast_batches_of_a_tensordataset_are_the_seeded_loaders(n, batch):
    """A TensorDataset: the CLI's seeded order, as the DataLoader over that order gave it."""
    from bitcl.train.seeds import generator
    data = _data(n)
    loop = _loop([(data, data)], batch)
    torch.manual_seed(5)
    order = torch.randperm(n, generator=generator(7, "order", 0, 0))
    expected = _drain(DataLoader(data, batch_size=batch, sampler=order.tolist()))
    expected_global = torch.get_rng_state()
    torch.manual_seed(5)
    _same(_drain(loop._batches(data, 0, 0, "order")), expected)
    assert torch.equal(torch.get_rng_state(), expected_global)
    torch.manual_seed(5)
    test_expected = _drain(DataLoader(data, batch_size=batch))
    test_global = torch.get_rng_state()
    torch.manual_seed(5)
    _same(_drain(loop._test_batches(data)), test_expected)
    assert torch.equal(torch.get_rng_state(), test_global)


def test_only_plain_tensor_data_takes_the_fast_path():
    data = _data(8)
    assert plain_tensors(data) is data.tensors
    assert plain_tensors(DataLoader(data, batch_size=2)) is data.tensors
    assert plain_tensors(DataLoader(data, batch_size=2, collate_fn=lambda b: b)) is None
    assert plain_tensors(DataLoader(data, batch_size=None)) is None
    assert plain_tensors(TensorDataset(torch.zeros(3))) is None
    assert plain_tensors(torch.utils.data.Subset(data, [0, 1])) is None


@pytest.mark.slow  # four short fit runs
def test_fit_on_loaders_matches_fit_on_the_same_loaders_without_the_fast_path(monkeypatch):
    """End to end: fit's results are those of the per-item DataLoader path, to the last bit."""
    from bitcl import api, api_context
    from bitcl.api import fit
    tasks = [(_data(40), _data(20)), (_data(41), _data(21))]

    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 5))
        loaders = [(DataLoader(tr, batch_size=8, shuffle=True), DataLoader(te, batch_size=8)) for tr, te in tasks]
        return fit(model, loaders, "ewc", options={"samples": 20, "fisher": "sampled"}, scenario="domain",
                   lr=0.05, optimizer="sgd", batch_size=8), fit(model, tasks, "si", scenario="domain", batch_size=8)

    fast = run()
    monkeypatch.setattr(api, "plain_tensors", lambda data: None)
    monkeypatch.setattr(api_context, "plain_tensors", lambda data: None)
    slow = run()
    for a, b in zip(fast, slow):
        assert a.accuracy_matrix == b.accuracy_matrix and a.extra == b.extra
