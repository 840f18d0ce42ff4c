"""``bitcl run | list | report``: the command line (contract in DESIGN.md part 2).

Bad input of any kind ends with one line on stderr and exit status 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Optional, Sequence

from bitcl.errors import BitclError

EXIT_BAD_INPUT = 2


class UsageError(BitclError):
    """A command line argparse rejected."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _option_flags(options_cls) -> list[tuple[str, dict]]:
    """argparse arguments for every field of a strategy's Options dataclass."""
    hints = typing.get_type_hints(options_cls)
    flags = []
    for f in dataclasses.fields(options_cls):
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = {"dest": f"opt_{f.name}", "default": argparse.SUPPRESS,
                  "help": f"{f.metadata.get('help', '')} (default: {default})"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind if kind in (int, float, str) else str
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        flags.append(("--" + f.name.replace("_", "-"), kwargs))
    return flags


def _run_parser(method_cls) -> argparse.ArgumentParser:
    from bitcl.config import DEVICES, LR_SCHEDULES, OPTIMIZERS, RunConfig
    from bitcl.data import BENCHMARKS, SCENARIOS
    d = RunConfig()
    p = _Parser(prog="bitcl run", description="Train one model on a sequence of tasks.")
    p.add_argument("--method", default=d.method, help="continual-learning method (see `bitcl list`)")
    p.add_argument("--benchmark", default=d.benchmark, help=f"one of {', '.join(BENCHMARKS)}")
    p.add_argument("--scenario", default=d.scenario, choices=SCENARIOS)
    p.add_argument("--tasks", type=int, default=None, help="number of tasks (default: the benchmark's)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=LR_SCHEDULES, help="per-task schedule")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data", default=None, help=".npz file, MNIST IDX folder or CIFAR folder (default: embedded MNIST)")
    p.add_argument("--classes", type=_int_list, default=None, help="keep only these classes, e.g. 5,6,7,8,9")
    p.add_argument("--arch", default=d.arch, choices=("mlp", "conv"))
    p.add_argument("--hidden", type=_int_list, default=d.hidden, help="MLP hidden widths, e.g. 1200 or 400,400")
    p.add_argument("--backbone", default=d.backbone, choices=("quant", "float"))
    p.add_argument("--bits", type=int, default=d.bits, help="bits per quantised weight (2..24)")
    p.add_argument("--device", default=d.device, choices=DEVICES)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--pretrained", default=None,
                   help="start from these backbone weights (`bitcl pretrain` file, safetensors or weights-only .pt)")
    p.add_argument("--out", default=None, help="run directory (results.json, checkpoints/, log)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete task")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-task lines")
    if method_cls is not None:
        group = p.add_argument_group(f"options of method {method_cls.name!r}")
        for flag, kwargs in _option_flags(method_cls.Options):
            group.add_argument(flag, **kwargs)
    return p


def _config_from_args(argv: Sequence[str]):
    from bitcl.config import RunConfig
    from bitcl.strategies import get_strategy
    pre = _Parser(add_help=False)
    pre.add_argument("--method", default=RunConfig().method)
    known, _ = pre.parse_known_args(argv)
    method_cls = get_strategy(known.method)
    args = _run_parser(method_cls).parse_args(argv)
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    fields = {k: v for k, v in vars(args).items() if not k.startswith("opt_")}
    return RunConfig(**fields, method_options=options)


def cmd_run(argv: Sequence[str]) -> int:
    from bitcl.engine import run
    config = _config_from_args(argv)
    result = run(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(result.format_matrix())
    if config.out:
        print(f"results: {config.out}/results.json")
    return 0


def cmd_list(argv: Sequence[str]) -> int:
    from bitcl.data import BENCHMARKS
    from bitcl.strategies import get_strategy, strategy_names
    _Parser(prog="bitcl list").parse_args(argv)
    print("methods:")
    for name in strategy_names():
        cls = get_strategy(name)
        print(f"  {name:<10} {cls.summary} [scenarios: {', '.join(cls.scenarios)}]")
    print("benchmarks:")
    for name, spec in BENCHMARKS.items():
        print(f"  {name:<15} {spec.description} (default {spec.default_tasks} tasks)")
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    from bitcl.report import write_report
    p = _Parser(prog="bitcl report", description="Compare runs: markdown table and PNG plots.")
    p.add_argument("runs", nargs="+", help="run directories holding results.json")
    p.add_argument("--out", default=None, help="markdown file to write (plots go beside it)")
    args = p.parse_args(argv)
    print(write_report(args.runs, args.out))
    return 0


def cmd_analyze(argv: Sequence[str]) -> int:
    what = argv[0] if argv else None
    if what == "importance":
        from bitcl.analysis.importance import analyze_importance, format_table
        from bitcl.config import RunConfig
        parser = _run_parser(None)
        parser.prog = "bitcl analyze importance"
        parser.description = "Train one task, then compare every importance measure with the Fisher."
        parser.add_argument("--task", type=int, default=0, help="which task of the benchmark to train")
        parser.add_argument("--samples", type=int, default=1000, help="samples for the output/Fisher measures")
        args = vars(parser.parse_args(argv[1:]))
        task, samples = args.pop("task"), args.pop("samples")
        result = analyze_importance(RunConfig(**args), task, samples, args["out"])
        print(format_table(result))
        if args["out"]:
            print(f"wrote {args['out']}/importance.json")
        return 0
    if what == "bits":
        from bitcl.analysis.bits import cmd_bits
        return cmd_bits(argv[1:], _Parser)
    raise UsageError("usage: bitcl analyze {importance,bits} ... (bitcl analyze importance --help)")


def cmd_export(argv: Sequence[str]) -> int:
    p = _Parser(prog="bitcl export", description="Export a checkpoint for edge deployment.")
    p.add_argument("checkpoint", help="DIR/checkpoints/task-<t>.safetensors")
    p.add_argument("--format", required=True, choices=("packed", "onnx"))
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--task", type=int, default=None, help="task whose head (and input permutation) to export")
    p.add_argument("--bits", type=int, default=None, help="keep only the B most significant bits of each weight")
    args = p.parse_args(argv)
    if args.format == "packed":
        from bitcl.export import export_packed
        s = export_packed(args.checkpoint, args.out, args.task, args.bits)
        print(f"wrote {s['file']}: {s['file_bytes']:,} bytes; {s['quantized_weights']:,} quantised weights at "
              f"{s['bits_per_weight']} bits = {s['plane_bytes']:,} bytes of planes "
              f"({s['plane_bytes_per_weight']:.4f} bytes per weight)")
    else:
        from bitcl.export.onnx import export_onnx
        s = export_onnx(args.checkpoint, args.out, args.task, args.bits)
        print(f"wrote {s['file']}: {s['file_bytes']:,} bytes (input 'pixels': raw 0..255 floats, dynamic batch)")
    return 0


def cmd_pretrain(argv: Sequence[str]) -> int:
    from bitcl.config import RunConfig
    from bitcl.pretrain import pretrain
    p = _Parser(prog="bitcl pretrain", description="Pre-train a backbone on source classes (training split).")
    p.add_argument("--data", default=None)
    p.add_argument("--classes", type=_int_list, default=None, help="source classes, e.g. 0,1,2,3,4")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=RunConfig().lr)
    p.add_argument("--arch", default="mlp", choices=("mlp", "conv"))
    p.add_argument("--hidden", type=_int_list, default=[1200])
    p.add_argument("--backbone", default="quant", choices=("quant", "float"))
    p.add_argument("--bits", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="safetensors file to write")
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    meta = pretrain(RunConfig(**args), out)
    print(f"wrote {out}: {meta['arch']} backbone ({meta['backbone']}), classes {meta['classes']}, "
          f"source test accuracy {meta['source_test_accuracy']:.4f}")
    return 0


COMMANDS = {"pretrain": cmd_pretrain, "run": cmd_run, "list": cmd_list, "report": cmd_report, "analyze": cmd_analyze, "export": cmd_export}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: bitcl {{{','.join(COMMANDS)}}} ...  (bitcl COMMAND --help)")
        return 0 if argv else EXIT_BAD_INPUT
    command, rest = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
        return COMMANDS[command](rest)
    except (BitclError, FloatingPointError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"bitcl {command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"bitcl {command}: interrupted", file=sys.stderr)
        return 130


def exit_process(code: int) -> None:
    """Leave with ``code``; a torchrun worker skips interpreter teardown (``os._exit``).

    gloo's worker thread frees the last collective's work object (and the tensors it holds)
    just after the main thread has seen it complete. If the interpreter is already
    finalising, that thread cannot take the GIL to release the tensors and the process
    aborts (``terminate called without an active exception``, SIGABRT) although the run
    finished: seen in 1 to 7 % of two-rank runs on this machine. Every file bitcl writes is closed by
    then, so only the standard streams need flushing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def entry() -> None:
    """The ``bitcl`` console script and ``python -m bitcl``."""
    exit_process(main())


if __name__ == "__main__":
    entry()
