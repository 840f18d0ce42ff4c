"""BLIP on a user's own model at the defaults of ``quantize_`` + ``fit``, before and after issue 22.

    .venv/bin/python benchmarks/bench_user_model.py [--seeds 0,1,2]

The issue's protocol (benchmarks/_user_models.py): MNIST digits 0/1 then 2/3 of
data/mnist15k.npz, labels 0/1 within each task, a 2-way head per task, 1 epoch, trained on the
training images and evaluated on the test split; the issue's conv net and an MLP 784-256-256.
Per model, task 0's and task 1's accuracy after the last task, mean and 95 % t interval over the
seeds (bitcl.stats.summarize), for:

* ``finetune``: no protection, the reference for how well task 1 can be learned;
* ``blip_issue``: the defaults the issue was filed against: ``quantize_(range="max")`` and
  BLIP's absolute prior F_0 = 1e-10;
* ``blip_range_auto``: range "auto" (BLIP's 6/sqrt(fan_in) at >= 16 bits), absolute prior 1e-10;
* ``blip_defaults``: the defaults now: range "auto" and fit's relative prior on a user's model.

Writes benchmarks/results/user_model.json (via _env.write_result).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import write_result  # noqa: E402
from _user_models import MODELS, digit_pair_tasks, figures, run  # noqa: E402

import bitcl  # noqa: E402
from bitcl.stats import summarize  # noqa: E402

CONDITIONS = {
    "finetune": ("finetune", None, None),
    "blip_issue": ("blip", {"range": "max"}, {"prior": "absolute"}),
    "blip_range_auto": ("blip", {}, {"prior": "absolute"}),
    "blip_defaults": ("blip", {}, None),
}


def main(seeds: list[int]) -> None:
    torch.set_num_threads(1)
    tasks = digit_pair_tasks(2, "test")
    results = {}
    for model in MODELS:
        results[model] = {}
        for condition, (method, quantize, options) in CONDITIONS.items():
            runs = []
            for seed in seeds:
                start = time.time()
                config = bitcl.BitConfig(**quantize) if quantize is not None else None
                runs.append(figures(run(model, tasks, method, seed, quantize=config, options=options)))
                print(f"{model} {condition} seed {seed}: {runs[-1]['final']} ({time.time() - start:.0f} s)",
                      flush=True)
            results[model][condition] = {
                "method": method, "quantize": quantize or {}, "options": options or {},
                "task0": summarize([r["final"][0] for r in runs], "task 0").as_dict(),
                "task1": summarize([r["final"][1] for r in runs], "task 1").as_dict(),
                "runs": runs}
    payload = {"protocol": {"tasks": "digits 0/1 then 2/3, labels 0/1, a 2-way head per task", "epochs": 1,
                            "split": "test", "seeds": seeds, "models": list(MODELS),
                            "interval": "95 % Student t over seeds (bitcl.stats.summarize)"},
               "results": results}
    print(write_result("user_model", payload))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    main([int(s) for s in parser.parse_args().seeds.split(",")])
