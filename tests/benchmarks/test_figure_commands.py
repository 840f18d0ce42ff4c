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
    assert [args[1] for args in lines] == ["speed"] + ["accuracy"] * 7


@pytest.mark.parametrize("args", [a for a in figure_commands() if a[0] == "benchmarks/bench_backbones.py"],
                         ids=lambda a: " ".join(a[1:4]))
def test_each_backbone_command_of_make_figures_parses(args, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_backbones

    parsed = bench_backbones.build_parser().parse_args(args[1:])
    assert parsed.what == args[1]
    if parsed.what == "accuracy":
        assert parsed.part in (None, "class_alexnet", "class_alexnet_variants", "class_resnet18",
                               "task_alexnet_variants",
                               "task_resnet18_variants", "class_resnet18_variants")


def test_an_empty_part_is_refused(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_backbones

    with pytest.raises(SystemExit) as exit_:
        bench_backbones.build_parser().parse_args(["accuracy", "--part", ""])
    assert exit_.value.code == 2 and "--part must be letters" in capsys.readouterr().err


# options that say where a script keeps its run cache or finds an old checkout, not what it computes
LOCATION_ONLY = {"--work"}


def figure_of(command: list[str]) -> list[str]:
    """A command with its location-only options dropped; parity_drivers' one argument is the path
    of an old checkout (``make figures`` makes it at PARITY_COMMIT), so it is dropped too."""
    kept, skip = [], False
    for word in command:
        if skip:
            skip = False
        elif word in LOCATION_ONLY:
            skip = True
        else:
            kept.append(word)
    return kept[:1] if kept and kept[0] == "benchmarks/parity_drivers.py" else kept


def unmade_results(results: Path, recipe: list[list[str]], kept: dict) -> list[str]:
    """The committed results (the older files ``kept`` as a "before" aside) whose recorded command
    is not one of the recipe's: ``make figures`` would not remake them."""
    import json

    made = {tuple(figure_of(args)) for args in recipe}
    missing = []
    for path in sorted(results.glob("*.json")):
        if path.name in kept:
            continue
        command = shlex.split(json.loads(path.read_text())["environment"]["command"])
        if command[0] != "python" or tuple(figure_of(command[1:])) not in made:
            missing.append(path.name)
    return missing


@pytest.fixture
def kept_as_before(monkeypatch) -> dict:
    """figures_status.KEPT_AS_BEFORE, with benchmarks/ on sys.path for this test only."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from figures_status import KEPT_AS_BEFORE

    return KEPT_AS_BEFORE


def test_make_figures_remakes_every_committed_result(kept_as_before):
    assert unmade_results(ROOT / "benchmarks" / "results", figure_commands(), kept_as_before) == []


def test_a_result_whose_command_is_not_in_the_recipe_is_named(tmp_path, kept_as_before):
    import json

    (tmp_path / "extra.json").write_text(json.dumps({"environment": {"command": "python benchmarks/bench_blip.py accuracy --seeds 9"}}))
    (tmp_path / "made.json").write_text(json.dumps({"environment": {"command": "python benchmarks/bench_blip.py accuracy"}}))
    assert unmade_results(tmp_path, figure_commands(), kept_as_before) == ["extra.json"]
