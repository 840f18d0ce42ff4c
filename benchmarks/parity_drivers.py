"""Every driver gives bit-identical results on two trees: the check behind "keep every measured accuracy".

    .venv/bin/python benchmarks/parity_drivers.py OLD_TREE

OLD_TREE is a checkout of the commit to compare with (``git worktree add /tmp/old COMMIT``). Each
case runs in a fresh one-thread subprocess per tree, with ``PYTHONPATH`` set to the tree, old and
new alternating:

* ``run``: ``bitcl run`` (BLIP, EWC, SI) on Split-MNIST, 5 tasks, 1 epoch, the committed 2,000-digit
  subset tests/data/mnist2k.npz; compared: results.json without its timing, output folder and
  ``code_digest`` (a hash of the source that ran, which differs between two trees by design).
* ``fit``: ``bitcl.fit`` with BLIP (absolute prior 1e-10, which both trees have: the own-model
  default changed on purpose) on the same digits, from TensorDatasets and from DataLoaders;
  compared: the accuracy matrix and a SHA-256 of the trained model's state.
* ``rl``: ``bitcl rl`` (BLIP) on breakout then freeway, 2,048 steps each, 5 evaluation episodes;
  compared: results.json without its timing, output folder and ``code_digest``.
* ``avalanche``: Avalanche Naive with ``BLIPPlugin`` over 3 two-digit tasks; compared: the model's
  state digest and its accuracy per task.

A case is identical when everything but the recorded settings (``config``) is equal; settings the
old tree did not have (new options recorded at their defaults) are listed per case, and any other
settings difference counts as a difference. The defaults 0.3.0 changed on purpose (``--bn``, and
``bitcl rl``'s BLIP prior) are named on both command lines, so the comparison is of code, not of
defaults. Writes benchmarks/results/parity_drivers.json; exits 1
when any case differs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TREE = os.path.dirname(HERE)
DATA = os.path.join(NEW_TREE, "tests", "data", "mnist2k.npz")

CLI_RESULTS = r"""
import json, subprocess, sys
out, args = sys.argv[1], sys.argv[2:]
done = subprocess.run([sys.executable, "-m", "bitcl", *args, "--quiet", "--out", out], capture_output=True, text=True)
if done.returncode:
    raise SystemExit(done.stderr.strip()[-800:])
r = json.load(open(out + "/results.json"))
r.pop("timing", None)
r.pop("code_digest", None)  # which code ran: provenance, different in two trees by design (old trees lack it)
r["config"].pop("out", None)
print(json.dumps(r, sort_keys=True))
"""

TASKS = r"""
import hashlib, json, sys, numpy as np, torch
from torch import nn
from torch.utils.data import TensorDataset
torch.set_num_threads(1)
data = np.load(sys.argv[1])
train = torch.tensor(data["train"]).bool()
pixels = torch.tensor(data["x"].reshape(len(data["x"]), -1), dtype=torch.float32) / 255.0
labels = torch.tensor(data["y"], dtype=torch.long)
x, y, xt, yt = pixels[train], labels[train], pixels[~train], labels[~train]
def task(a, b):
    keep, keep_t = (y == a) | (y == b), (yt == a) | (yt == b)
    return (TensorDataset(x[keep], (y[keep] == b).long()), TensorDataset(xt[keep_t], (yt[keep_t] == b).long()))
tasks = [task(0, 1), task(2, 3), task(4, 5)]
def digest(model):
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode()); h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
"""

FIT = TASKS + r"""
from torch.utils.data import DataLoader
import bitcl
loaders = sys.argv[2] == "dataloaders"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 128), nn.ReLU())
bitcl.quantize_(model, bitcl.BitConfig(bits=20))
heads = [nn.Linear(128, 2) for _ in tasks]
data = [(DataLoader(tr, batch_size=64, shuffle=True), DataLoader(te, batch_size=500)) for tr, te in tasks] \
    if loaders else tasks
# the absolute prior both trees have (fit's own-model default became the relative prior in 0.3.0)
r = bitcl.fit(model, data, "blip", heads=heads, options={"fisher_prior": 1e-10}, epochs=1, seed=0, quiet=True)
print(json.dumps({"matrix": r.accuracy_matrix, "model": digest(model)}))
"""

AVALANCHE = TASKS + r"""
import bitcl, bitcl.avalanche as bav  # first: bitcl makes torchvision's ops importable beside CPU torch
from avalanche.benchmarks.utils.data import AvalancheDataset  # noqa: F401  (Avalanche importable)
from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
class Net(MultiTaskModule):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(784, 128), nn.ReLU())
        bitcl.quantize_(self.trunk, bitcl.BitConfig(bits=20))
        self.heads = MultiHeadClassifier(128, 2)
    def forward_single_task(self, x, task_label):
        return self.heads(self.trunk(x), task_label)
torch.manual_seed(0)
bench = tensors_benchmark(train_tensors=[tr.tensors for tr, _ in tasks], test_tensors=[te.tensors for _, te in tasks],
                          task_labels=list(range(len(tasks))), complete_test_set_only=False)
model = Net()
naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=nn.CrossEntropyLoss(),
              train_mb_size=64, train_epochs=1, eval_mb_size=500, device="cpu", plugins=[bav.BLIPPlugin()],
              evaluator=EvaluationPlugin(loggers=[]))
for experience in bench.train_stream:
    naive.train(experience)
with torch.no_grad():
    acc = [float((model(te.tensors[0], torch.full((len(te),), t)).argmax(1) == te.tensors[1]).float().mean())
           for t, (_, te) in enumerate(tasks)]
print(json.dumps({"acc": acc, "model": digest(model)}))
"""


def cases(work: str) -> list[tuple[str, str, list[str]]]:
    """(name, script, arguments) of every case; ``{out}`` in an argument is the case's own folder."""
    # Defaults that 0.3.0 changed on purpose are named, so both trees run the same settings: `--bn` (now
    # `auto`, recorded as the policy it resolves to; the MLP has no batch norm, so it decides nothing
    # here) and `bitcl rl`'s BLIP prior (its own default since 0.3.0, chosen by bench_rl.py tune; before,
    # the CLI's 1e-10).
    run = ["run", "--benchmark", "split-mnist", "--data", DATA, "--tasks", "5", "--epochs", "1", "--seed", "0",
           "--bn", "first-task"]
    rl = ["rl", "--method", "blip", "--games", "breakout,freeway", "--steps", "2048", "--eval-episodes", "5",
          "--threads", "1", "--seed", "0", "--fisher-prior", "1e-10"]
    return ([(f"run {m}", CLI_RESULTS, ["{out}", *run, "--method", m]) for m in ("blip", "ewc", "si")]
            + [("rl blip", CLI_RESULTS, ["{out}", *rl])]
            + [(f"fit blip {kind}", FIT, [DATA, kind]) for kind in ("datasets", "dataloaders")]
            + [("avalanche BLIPPlugin", AVALANCHE, [DATA])])


def one(tree: str, script: str, args: list[str], out: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, *[a.replace("{out}", out) for a in args]],
                          capture_output=True, text=True, env=env, cwd=tree, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"parity_drivers: {tree}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _flat(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def compare(old: dict, new: dict) -> tuple[bool, list[str]]:
    """(identical, settings only the new tree records): all but ``config`` must be equal, and every
    setting the old tree recorded must be recorded with the same value."""
    rest = lambda r: {k: v for k, v in r.items() if k != "config"}  # noqa: E731
    old_config, new_config = _flat(old.get("config", {})), _flat(new.get("config", {}))
    kept = all(k in new_config and new_config[k] == v for k, v in old_config.items())
    return rest(old) == rest(new) and kept, sorted(set(new_config) - set(old_config))


def main(old_tree: str) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for index, (name, script, args) in enumerate(cases(work)):
            old = one(old_tree, script, args, os.path.join(work, f"old{index}"))
            new = one(NEW_TREE, script, args, os.path.join(work, f"new{index}"))
            same, added = compare(old, new)
            rows.append({"case": name, "identical": same, "settings_added": added, "old": old, "new": new})
            print(f"{name:<24} identical {same}" + (f" (settings added: {', '.join(added)})" if added else ""),
                  flush=True)
    old_commit = subprocess.run(["git", "-C", old_tree, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    write_result("parity_drivers", {
        "protocol": "one subprocess per case and tree, 1 thread, old and new alternating; see the module docstring",
        "old_commit": old_commit, "all_identical": all(r["identical"] for r in rows), "cases": rows})
    if not all(r["identical"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1])
