"""BLIP in your own training loop: a plain PyTorch model, bitcl.quantize_, explicit strategy hooks.

Split-MNIST (embedded 5,000 digits, no download), 5 tasks of two digits, one head per task.
Runs in a few seconds on a CPU:  python examples/own_loop.py
"""
import torch
from torch import nn
from torch.utils.data import DataLoader

import bitcl
from bitcl.api import benchmark_tasks, make_strategy
from bitcl.api_context import DataContext
from bitcl.quant import bit_states

torch.manual_seed(0)
torch.set_num_threads(1)
tasks = benchmark_tasks("split-mnist", scenario="task")            # [(train, test)] TensorDatasets

# your model: a backbone and one head per task; quantise the backbone's layers to 20-bit Bit layers
backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
heads = nn.ModuleList(nn.Linear(128, 2) for _ in tasks)
bitcl.quantize_(backbone, bitcl.BitConfig(bits=20, range="fixed"))  # BLIP's fixed range 6/sqrt(fan_in)

strategy = make_strategy("blip", backbone, num_tasks=len(tasks), scenario="task", fisher_prior=1e-8)

for t, (train, test) in enumerate(tasks):
    def forward(x, t=t):
        return heads[t](backbone(x))
    ctx = DataContext(backbone, train, t, strategy.info, forward=forward)   # what the hooks see of task t
    strategy.before_task(ctx)
    optimiser = torch.optim.Adam([*backbone.parameters(), *heads[t].parameters()], lr=3e-3)
    for x, y in DataLoader(train, batch_size=64, shuffle=True):
        loss = strategy.loss(forward(x), y) / len(y)
        penalty = strategy.penalty()                                   # None for BLIP
        if penalty is not None:
            loss = loss + penalty
        optimiser.zero_grad()
        loss.backward()
        strategy.after_backward(ctx)
        optimiser.step()
        ctx.project()                                                  # frozen bits stay frozen
        strategy.after_step(ctx)
    strategy.end_task(ctx)                                             # BLIP freezes bits here

    with torch.no_grad():
        accs = [float((heads[j](backbone(te.tensors[0])).argmax(1) == te.tensors[1]).float().mean())
                for j, (_, te) in enumerate(tasks[:t + 1])]
    frozen = sum(s.frozen_bits() for _, s in bit_states(backbone))
    total = sum(s.total_bits() for _, s in bit_states(backbone))
    print(f"after task {t}: accuracy on tasks 0..{t} " + " ".join(f"{a:.3f}" for a in accs)
          + f"  frozen bits {frozen / total:.1%}")
