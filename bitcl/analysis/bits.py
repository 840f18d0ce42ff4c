"""``bitcl analyze bits RUN_DIR``: how few bits does each task need?

For every task, test accuracy of the run's final model when every quantised
weight keeps only its top B bits (B = 1..N, rebuilt at the middle of the open
window; ``bitcl.quant.reduce``), and when every weight keeps only its *frozen*
bits (each weight its own k): do the frozen bits alone carry the old tasks?
Writes ``bits.json`` (and ``bits.png`` with matplotlib) in the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from bitcl.checkpoint import atomic_write_text, latest_checkpoint, read_checkpoint
from bitcl.config import RunConfig
from bitcl.data import build_scenario
from bitcl.data.readers import load_data
from bitcl.errors import BitclError
from bitcl.export.checkpoint_model import load_checkpoint_model
from bitcl.quant import bit_states
from bitcl.quant.reduce import frozen_value, reduced_value


def _accuracy(model, task, batch: int = 1000) -> float:
    correct = 0
    with torch.no_grad():
        for s in range(0, len(task.y_test), batch):
            x = task.inputs(task.x_test[s:s + batch])
            correct += int((model(x, task.index).argmax(1) == task.y_test[s:s + batch]).sum())
    return correct / len(task.y_test)


def analyze_bits(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BitclError(f"{run_dir}: no such run directory")
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise BitclError(f"{run_dir}: no checkpoints (not a bitcl run directory?)")
    t_last, path = found
    model, spec = load_checkpoint_model(path)  # validated: tensors, metadata, progress, model description
    if spec["backbone"] != "quant":
        raise BitclError(f"{run_dir}: a float-backbone run has no bits to analyse")
    progress = read_checkpoint(path, task=t_last)[1]["bitcl_progress"]
    config = RunConfig.from_dict(progress["config"], f"{path}: bitcl_progress.config")
    scenario = build_scenario(config.benchmark, load_data(config.data), config.scenario, config.tasks,
                              config.seed, config.classes)
    tasks = scenario.tasks[:t_last + 1]
    states = dict(bit_states(model))
    original = {n: s.latent.detach().clone() for n, s in states.items()}
    n_bits = spec["bits"]
    curves = {}
    for keep in range(1, n_bits + 1):
        with torch.no_grad():
            for name, s in states.items():
                s.latent.copy_(reduced_value(s.codes, s.scale, n_bits, keep))
        curves[keep] = [_accuracy(model, t) for t in tasks]
    with torch.no_grad():
        for name, s in states.items():
            s.latent.copy_(frozen_value(s.codes, s.frozen, s.scale, n_bits))
    frozen_only = [_accuracy(model, t) for t in tasks]
    with torch.no_grad():
        for name, s in states.items():
            s.latent.copy_(original[name])
    result = {"run": str(run_dir), "checkpoint": str(path), "bits": n_bits,
              "accuracy_by_bits": {str(k): v for k, v in curves.items()},
              "accuracy_frozen_bits_only": frozen_only,
              "accuracy_full": curves[n_bits],
              "min_bits_within_1pt": [next(k for k in range(1, n_bits + 1) if curves[k][j] >= curves[n_bits][j] - 0.01)
                                      for j in range(len(tasks))]}
    atomic_write_text(run_dir / "bits.json", json.dumps(result, indent=2))
    result["plot"] = _plot(result, run_dir / "bits.png")
    return result


def _plot(result: dict, path: Path) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keeps = sorted(int(k) for k in result["accuracy_by_bits"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for j in range(len(result["accuracy_full"])):
        line, = ax.plot(keeps, [result["accuracy_by_bits"][str(k)][j] for k in keeps], marker=".", label=f"task {j}")
        ax.axhline(result["accuracy_frozen_bits_only"][j], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("bits kept per weight (most significant first)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs bits kept (dotted: frozen bits only)", fontsize=9)
    lowest = min(min(v) for v in result["accuracy_by_bits"].values())
    ax.set_ylim(max(0.0, lowest - 0.05), 1.005)
    ax.set_xticks(keeps if len(keeps) <= 24 else keeps[::2])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def cmd_bits(argv, parser_cls) -> int:
    parser = parser_cls(prog="bitcl analyze bits", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    result = analyze_bits(args.run_dir)
    header = "bits  " + " ".join(f"task{j:<3d}" for j in range(len(result["accuracy_full"])))
    print(header)
    for k, accs in result["accuracy_by_bits"].items():
        print(f"{int(k):>4}  " + " ".join(f"{a:.4f} " for a in accs))
    print("frozen" + " ".join(f"{a:.4f} " for a in result["accuracy_frozen_bits_only"]))
    print(f"wrote {args.run_dir}/bits.json" + (f" and {result['plot']}" if result.get("plot") else ""))
    return 0
