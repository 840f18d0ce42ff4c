"""Engine overhead: `finetune --backbone float` vs a minimal hand-written PyTorch loop (issue 3).

    .venv/bin/python benchmarks/bench_engine.py

Same model (MLP 784-1200, one head per task), data (Split-MNIST on
data/mnist15k.npz), batch size 64, epochs, Adam with the same cosine
schedule, 2 threads, one process; the two are timed alternately, training time
only (no evaluation), and the median of the per-round ratios is reported.
Target: engine / hand loop <= 1.10. Writes benchmarks/results/engine_overhead.json.
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from _timing import write_json
from bitcl.config import RunConfig
from bitcl.engine import Engine

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "mnist15k.npz")
EPOCHS = 2


def hand_loop(tasks, seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(784, 1200), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(1200, 2) for _ in tasks)
    start = time.perf_counter()
    for t, task in enumerate(tasks):
        params = list(body.parameters()) + list(heads[t].parameters())
        opt = torch.optim.Adam(params, lr=3e-3)
        n = len(task.y_train)
        steps = (n + 63) // 64
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS * steps)
        for epoch in range(EPOCHS):
            order = torch.randperm(n)
            for i in range(steps):
                idx = order[i * 64:(i + 1) * 64]
                loss = F.cross_entropy(heads[t](body(task.x_train[idx])), task.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return time.perf_counter() - start


def engine_loop():
    engine = Engine(RunConfig(method="finetune", backbone="float", data=DATA, epochs=EPOCHS, quiet=True))
    start = time.perf_counter()
    for task in engine.scenario.tasks:
        ctx = engine.context(task)
        engine.strategy.before_task(ctx)
        engine.train_task(task, ctx=ctx)
        engine.strategy.end_task(ctx)
    return time.perf_counter() - start, engine.scenario.tasks


def main():
    torch.set_num_threads(2)
    _, tasks = engine_loop()  # warm-up (data load, allocator)
    hand_loop(tasks)
    ratios, eng, hand = [], [], []
    for _ in range(5):
        h = hand_loop(tasks)
        e, _ = engine_loop()
        ratios.append(e / h)
        eng.append(e)
        hand.append(h)
    out = {"ratio_engine_over_hand_loop": statistics.median(ratios), "ratios": ratios, "engine_s": eng,
           "hand_loop_s": hand, "epochs_per_task": EPOCHS, "tasks": len(tasks), "target": 1.10}
    write_json("engine_overhead.json", out)
    print(f"engine / hand-written loop (finetune, float MLP 784-1200, Split-MNIST, {EPOCHS} epochs/task): "
          f"{out['ratio_engine_over_hand_loop']:.3f} (target <= 1.10; rounds {[round(r, 3) for r in ratios]})")


if __name__ == "__main__":
    main()
