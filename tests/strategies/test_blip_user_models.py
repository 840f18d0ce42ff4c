"""BLIP on users' models at the defaults of quantize_ + fit learns a second task as well as
finetuning does, and keeps the first (issue 22).

Split MNIST digits 0/1 then 2/3 of data/mnist15k.npz, labels 0/1 within each task, one 2-way
head per task, one epoch. Two causes stacked: quantize_'s old default range max|w| left a fresh
layer 1/6 of BLIP's range (fixed by range "auto"), and BLIP's absolute prior F_0 = 1e-10, tuned on
bitcl's MLP, froze 12 of 20 bits of the issue's shared convolution weights (their Fisher is
~2000x a dense weight's) and 5 of the Linear(5408, 64)'s: task 1 reached 0.86 where finetuning
reached 0.94. fit's relative prior (bitcl/strategies/blip.py) freezes by each weight's Fisher
relative to its tensor's mean, whatever the architecture.
"""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bitcl
from bitcl.quant import bit_states


def _tasks(path, pairs=2):
    with np.load(path) as f:
        x = torch.tensor(f["x"], dtype=torch.float32).div(255).unsqueeze(1)
        y, train = torch.tensor(f["y"]).long(), torch.tensor(f["train"])
    tasks = []
    for a, b in [(d, d + 1) for d in range(0, 2 * pairs, 2)]:
        tasks.append(tuple(TensorDataset(x[m], (y[m] == b).long())
                           for m in (train & ((y == a) | (y == b)), ~train & ((y == a) | (y == b)))))
    return tasks


def _conv():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5408, 64), nn.ReLU()), 64


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU()), 256


def _fit(build, tasks, method):
    torch.manual_seed(0)
    model, features = build()
    bitcl.quantize_(model)  # the defaults: 20 bits, range "auto"
    heads = [nn.Linear(features, 2) for _ in tasks]
    result = bitcl.fit(model, tasks, method=method, heads=heads, epochs=1)
    return result, model


@pytest.mark.slow
@pytest.mark.parametrize("build", [_conv, _mlp], ids=["conv", "mlp"])
def test_blip_learns_a_second_task_as_well_as_finetuning_at_the_defaults(build, mnist15k_path, one_thread):
    """Task 1 within 0.03 of finetuning's, task 0 kept at >= 0.99, bits frozen, the range left reported."""
    tasks = _tasks(mnist15k_path)
    finetune, _ = _fit(build, tasks, "finetune")
    blip, model = _fit(build, tasks, "blip")
    a, f = blip.accuracy_matrix, finetune.accuracy_matrix
    assert a[1][0] >= 0.99, a
    assert a[1][1] >= f[1][1] - 0.03, (a, f)
    assert 0 < blip.capacity[0]  # BLIP did freeze bits: learning is not bought by protecting nothing
    assert blip.to_json()["config"]["method_options"]["prior"] == "relative"
    assert blip.not_learned == [] and blip.to_json()["not_learned"] == []
    assert set(blip.to_json()["range_left"][0]) == {f"backbone.{name}" for name, _ in bit_states(model)}


@pytest.mark.slow
def test_blip_learns_every_task_of_five_and_keeps_them_on_the_mlp(mnist15k_path, one_thread):
    """Digits 0/1, 2/3, ..., 8/9 on the MLP: each task learned within 0.03 of finetuning's accuracy
    right after its training, and kept (BWT >= -0.01). With the absolute prior 1e-10 the later
    tasks were learned to ~0.63-0.83 only: the first tasks had frozen most of the bits."""
    tasks = _tasks(mnist15k_path, pairs=5)
    finetune, _ = _fit(_mlp, tasks, "finetune")
    blip, _ = _fit(_mlp, tasks, "blip")
    a, f = blip.accuracy_matrix, finetune.accuracy_matrix
    for t in range(len(tasks)):
        assert a[t][t] >= f[t][t] - 0.03, (t, a, f)
    bwt = sum(a[-1][j] - a[j][j] for j in range(len(tasks) - 1)) / (len(tasks) - 1)
    assert bwt >= -0.01, a
