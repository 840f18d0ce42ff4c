"""DLCFT from a pre-trained backbone (issue 8), on data/mnist15k.npz.

    .venv/bin/python benchmarks/bench_dlcft.py

Pre-train the MLP 784-1200 on digits 0-4 (training split only, 5 epochs), then
(a) learn digits 5-9 class-incrementally, one digit per task, and (b) learn all ten
digits data-incrementally in 5 chunks, both from the same backbone, for dlcft with each
curvature (heads linearised; exact only for the 5-output class-incremental head:
the 10-output head's 12,010 parameters are over the exact-curvature limit), dlcft with 2 linearised layers
(kfac / diagonal), ewc (cross-entropy), finetune and joint. 3 epochs per task.
Tables by `bitcl report` in benchmarks/out/dlcft_{class,data}/report.md.
"""
from __future__ import annotations

import os

import torch

from bitcl.config import RunConfig
from bitcl.engine import run
from bitcl.pretrain import pretrain
from bitcl.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist15k.npz")
RUNS = os.path.join(HERE, "out", "runs")
PRE = os.path.join(HERE, "out", "pretrained_0-4.safetensors")

METHODS = [("dlcft-exact", "dlcft", {"curvature": "exact"}), ("dlcft-kfac", "dlcft", {"curvature": "kfac"}),
           ("dlcft-diagonal", "dlcft", {"curvature": "diagonal"}),
           ("dlcft-2layers-kfac", "dlcft", {"curvature": "kfac", "layers": 2}),
           ("dlcft-2layers-diagonal", "dlcft", {"curvature": "diagonal", "layers": 2}),
           ("ewc-ce", "ewc", {}), ("finetune", "finetune", {}), ("joint", "joint", {})]


def main():
    torch.set_num_threads(2)
    meta = pretrain(RunConfig(data=DATA, classes=[0, 1, 2, 3, 4], epochs=5), PRE)
    print(f"pre-trained on digits 0-4: source test accuracy {meta['source_test_accuracy']:.4f}", flush=True)
    for setting, kw in (("class", dict(scenario="class", classes=[5, 6, 7, 8, 9], tasks=5)),
                        ("data", dict(scenario="data", tasks=5))):
        dirs = []
        for name, method, options in METHODS:
            if setting == "data" and name == "dlcft-exact":
                continue  # 10 outputs x 1201 features = 12,010 parameters: too large for the exact matrix
            out = os.path.join(RUNS, f"dlcft-{setting}-{name}")
            r = run(RunConfig(method=method, benchmark="split-mnist", pretrained=PRE, data=DATA, epochs=3,
                              quiet=True, out=out, overwrite=True, method_options=options, **kw))
            dirs.append(out)
            print(f"{setting:<5} {name:<24} ACC {r.acc:.4f} BWT {r.bwt:+.4f} "
                  f"train {sum(r.timing['train_seconds']):.1f}s", flush=True)
        print(write_report(dirs, os.path.join(HERE, "out", f"dlcft_{setting}", "report.md")))


if __name__ == "__main__":
    main()
