"""`make figures` runs each benchmark with the arguments written in the Makefile; those arguments
must parse. (The backbone table's line once failed at start: argparse passes a string default
through ``type``, and ``--part``'s check refused the default "".)"""
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def figure_commands() -> list[list[str]]:
    """The argument lists of the Makefile's ``figures`` recipe, continuation lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = text.split("\nfigures: ", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line.split("$(BIN)/python ", 1)[1]) for line in recipe.splitlines()
            if "$(BIN)/python benchmarks/" in line]


def test_the_figures_recipe_runs_the_backbone_table_and_its_pieces():
    lines = [args for args in figure_commands() if args[0] == "benchmarks/bench_backbones.py"]
    assert [args[1] for args in lines] == ["speed", "accuracy", "accuracy", "accuracy"]


@pytest.mark.parametrize("args", [a for a in figure_commands() if a[0] == "benchmarks/bench_backbones.py"],
                         ids=lambda a: " ".join(a[1:4]))
def test_each_backbone_command_of_make_figures_parses(args, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_backbones

    parsed = bench_backbones.build_parser().parse_args(args[1:])
    assert parsed.what == args[1]
    if parsed.what == "accuracy":
        assert parsed.part in (None, "class_alexnet", "class_alexnet_variants")


def test_an_empty_part_is_refused(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_backbones

    with pytest.raises(SystemExit) as exit_:
        bench_backbones.build_parser().parse_args(["accuracy", "--part", ""])
    assert exit_.value.code == 2 and "--part must be letters" in capsys.readouterr().err
