"""The strategy interface: methods see a TaskContext, never the engine; needs are checked up front."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitcl.config import RunConfig
from bitcl.engine import Engine
from bitcl.errors import ConfigError
from bitcl.strategies import (RunInfo, TaskContext, Unsupported, check_supported, get_strategy, make_options,
                              strategy_names)
from bitcl.strategies.context import SERVICES

PACKAGE = Path(__file__).resolve().parents[2] / "bitcl" / "strategies"


def test_every_method_file_is_discovered_and_registered():
    """Each module of bitcl/strategies registers a method without being listed anywhere."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")} - {"base", "context", "state",
                                                                                       "regularizer"}
    registered = {get_strategy(name).__module__.rsplit(".", 1)[1] for name in strategy_names()}
    assert modules <= registered


def test_strategies_never_import_the_engine_or_the_loops():
    """No method file imports bitcl.engine, bitcl.train, bitcl.rl or the CLI (AST check)."""
    banned = ("bitcl.engine", "bitcl.train", "bitcl.rl", "bitcl.cli", "bitcl.api")
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith(banned) for n in names), f"{path.name} imports {names}"


@pytest.mark.slow
def test_no_import_cycle_between_engine_and_strategies():
    """Importing the strategies, models or pretrain loader does not pull in the engine."""
    code = ("import sys, bitcl.strategies, bitcl.models, bitcl.models.pretrained, bitcl.importance; "
            "print('bitcl.engine' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_a_method_needing_a_service_is_refused_where_it_is_missing():
    """A loop that lacks a needed service refuses the method before any training, naming the service."""
    with pytest.raises(ConfigError, match="independent_gradient"):
        check_supported(get_strategy("siu"), frozenset(), "a test loop")
    check_supported(get_strategy("siu"), frozenset(SERVICES), "a loop with everything")
    assert get_strategy("joint").needs == {"replay"} and get_strategy("anpyc").needs == {"retrain"}


def test_a_context_without_a_service_raises_unsupported():
    """Calling a service the context does not provide raises a precise ConfigError subclass."""
    ctx = TaskContext(torch.nn.Linear(2, 2), 0, RunInfo(1, "task"))
    with pytest.raises(Unsupported):
        ctx.retrain(1, "x")
    with pytest.raises(Unsupported):
        ctx.independent_gradient({})


@pytest.mark.slow
def test_hooks_receive_the_context_of_the_task(small_npz):
    """before_task, after_backward, after_step and end_task all see the same task's context."""
    engine = Engine(RunConfig(method="finetune", data=small_npz, epochs=1, hidden=[8], quiet=True, tasks=5))
    seen = []
    strategy = engine.strategy
    for hook in ("before_task", "after_backward", "after_step", "end_task"):
        setattr(strategy, hook, lambda ctx, hook=hook: seen.append((hook, ctx.task_index)))
    engine.run()
    assert {h for h, _ in seen} == {"before_task", "after_backward", "after_step", "end_task"}
    firsts = [t for h, t in seen if h == "before_task"]
    assert firsts == list(range(5)) and [t for h, t in seen if h == "end_task"] == firsts


def test_strategies_work_on_any_module_given_protected_parameters():
    """A method built on a user's plain nn.Module protects every trainable parameter."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    ewc = get_strategy("ewc")
    strategy = ewc(make_options(ewc), model, RunInfo(2, "domain"))
    assert set(strategy.params) == {"0.weight", "0.bias"}
