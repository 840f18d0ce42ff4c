"""The support matrix: which method runs in which setting, computed from the code.

For every registered method (``bitcl.strategies.strategy_names``) × scenario × backbone
architecture (``bitcl.models.backbone_names``) × weights (quantised or float), a run is
set up exactly as ``bitcl run`` sets it up, by constructing the :class:`~bitcl.engine.Engine`
with ``epochs=0`` on a few synthetic 28×28 digits: the cell holds ``"runs"`` or the one-line
error with which the engine refuses it. Every refusal happens in ``Engine.__init__``, before
any training (tests/test_support.py runs every "runs" cell for a few steps).

Data parallelism (``torchrun``) cannot be set up inside one process, so that column comes
from the method's declared capability (``Strategy.distributable``) and the architecture
(:func:`data_parallel_refusal`), the same checks the engine makes;
tests/test_distributed.py checks them against real 2-rank runs.

``markdown_table()`` renders the matrix for the README; ``python -m bitcl.support`` prints it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from bitcl.constants import LAYER_KINDS, SCENARIOS
from bitcl.errors import BitclError, ConfigError
from bitcl.models.norm import data_parallel_refusal  # noqa: F401  (re-exported; the engine's check)

RUNS = "runs"
WEIGHTS = LAYER_KINDS


@dataclass(frozen=True, order=True)
class Setting:
    """One cell of the matrix (without data parallelism, which depends on the method only)."""

    method: str
    scenario: str
    arch: str
    backbone: str


def tiny_digits(per_class: int = 4, classes: int = 4):
    """Synthetic 28×28 single-channel images, ``per_class`` of each class in both splits (setup only)."""
    from bitcl.data import ArrayData
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.rand(len(y), 1, 28, 28, generator=generator)
    return ArrayData("synthetic-digits", x, y, x.clone(), y.clone())


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def setup_outcome(setting: Setting, data=None) -> str:
    """``"runs"`` or the engine's one-line refusal for ``setting`` (built with epochs=0)."""
    from bitcl.config import RunConfig
    from bitcl.engine import Engine
    config = RunConfig(method=setting.method, scenario=setting.scenario, arch=setting.arch,
                       backbone=setting.backbone, benchmark="split-mnist", tasks=2, classes=[0, 1, 2, 3],
                       epochs=0, hidden=[8], quiet=True)
    try:
        Engine(config, data=data if data is not None else tiny_digits()).close()
    except BitclError as error:
        return one_line(error)
    return RUNS


def data_parallel_outcome(method: str, arch: str = "mlp") -> str:
    """``"runs"`` or why ``method`` on ``arch`` is refused under torchrun: the method's declared
    ``distributable``, then :func:`data_parallel_refusal` of the architecture's model."""
    from bitcl.models import build_model
    from bitcl.strategies import get_strategy
    if not get_strategy(method).distributable:
        return f"method {method!r} cannot run under torchrun (README, support matrix)"
    try:  # 32x32: the smallest image every built-in backbone takes; narrow where the width is free
        model = build_model(arch, (1, 32, 32), [2, 2], "task", "float", hidden=(8,), width=4)
    except ConfigError:  # a width fixed by the backbone's weights (resnet18-imagenet)
        model = build_model(arch, (1, 32, 32), [2, 2], "task", "float", hidden=(8,))
    return data_parallel_refusal(arch, model) or RUNS


def settings(methods: Optional[Iterable[str]] = None, scenarios: Iterable[str] = SCENARIOS,
             archs: Optional[Iterable[str]] = None, weights: Iterable[str] = WEIGHTS) -> list[Setting]:
    """Every combination (defaults: every registered method and architecture)."""
    from bitcl.models import backbone_names
    from bitcl.strategies import strategy_names
    methods = strategy_names() if methods is None else list(methods)
    archs = backbone_names() if archs is None else list(archs)
    return [Setting(m, s, a, w) for m in methods for s in scenarios for a in archs for w in weights]


def support_matrix(cells: Optional[Iterable[Setting]] = None) -> dict[Setting, str]:
    """``{setting: "runs" | one-line refusal}`` for ``cells`` (default: all of :func:`settings`)."""
    data = tiny_digits()
    return {cell: setup_outcome(cell, data) for cell in (settings() if cells is None else cells)}


def markdown_table(matrix: Optional[dict[Setting, str]] = None) -> str:
    """One row per method, one column per scenario and one for torchrun.

    A cell reads ``runs`` when every architecture and both weight kinds run; otherwise it names
    what runs and points to the numbered refusal reasons listed under the table."""
    matrix = support_matrix() if matrix is None else matrix
    methods = sorted({s.method for s in matrix})
    scenarios = [s for s in SCENARIOS if any(c.scenario == s for c in matrix)]
    reasons: dict[str, int] = {}

    def note(reason: str) -> str:
        reasons.setdefault(reason, len(reasons) + 1)
        return f"[{reasons[reason]}]"

    def cell(method: str, scenario: str) -> str:
        outcomes = {c: v for c, v in matrix.items() if c.method == method and c.scenario == scenario}
        refused = {c: v for c, v in outcomes.items() if v != RUNS}
        if not refused:
            return RUNS
        notes = " ".join(sorted({note(v) for v in refused.values()}, key=lambda n: int(n[1:-1])))
        running = sorted(c for c in outcomes if c not in refused)
        if not running:
            return f"no {notes}"
        kinds = {c.backbone for c in running}
        if len(kinds) == 1 and all(c.backbone in kinds for c in outcomes if c not in refused) \
                and all(c.backbone not in kinds for c in refused):
            return f"{kinds.pop()} weights only {notes}"
        return f"{', '.join(f'{c.arch}/{c.backbone}' for c in running)}; else no {notes}"

    archs = sorted({c.arch for c in matrix})

    def parallel(method: str) -> str:
        outcomes = {arch: data_parallel_outcome(method, arch) for arch in archs}
        refused = {o for o in outcomes.values() if o != RUNS}
        if not refused:
            return RUNS
        notes = " ".join(sorted({note(o) for o in refused}, key=lambda n: int(n[1:-1])))
        running = [a for a, o in outcomes.items() if o == RUNS]
        return f"{', '.join(running)} only {notes}" if running else f"no {notes}"

    lines = ["| method | " + " | ".join(scenarios) + " | torchrun |",
             "|---" * (len(scenarios) + 2) + "|"]
    for method in methods:
        row = [cell(method, s) for s in scenarios] + [parallel(method)]
        lines.append(f"| `{method}` | " + " | ".join(row) + " |")
    lines += ["", f"`runs`: the engine sets it up on every architecture ({', '.join(archs)}) with quantised and "
              "float weights (tests/test_support.py trains each method in every scenario on the MLP "
              "and once on every other architecture); torchrun: 2-rank runs hold the 1-process state "
              "(tests/test_distributed.py). Refusals come from Engine(...), before any training:"]
    lines += [""] + [f"- [{n}] {reason}" for reason, n in reasons.items()]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bitcl.support
    torch.set_num_threads(1)
    print(markdown_table())
