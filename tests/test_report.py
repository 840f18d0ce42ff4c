"""bitcl report: the comparison table and plots, from real results.json files."""
import json
import sys

import pytest

import bitcl
from bitcl.errors import DataError

from tests.conftest import cli


def fake_run(folder, method, capacity=None):
    folder.mkdir()
    matrix = [[0.9, 0.5], [0.8, 0.95]]
    res = {"bitcl_version": bitcl.__version__, "method": method, "scenario": "task", "tasks": 2, "accuracy_matrix": matrix, "acc": 0.875, "bwt": -0.1,
           "forgetting": 0.1, "timing": {"train_seconds": [1.0, 2.0]}, "memory": {"state_bytes": [10, 10]}}
    if capacity:
        res["capacity"] = capacity
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_report_table_and_plots(tmp_path):
    """The table has one row per run with its figures; PNGs are written beside --out."""
    a = fake_run(tmp_path / "a", "blip", [0.1, 0.3])
    b = fake_run(tmp_path / "b", "finetune")
    done = cli("report", a, b, "--out", tmp_path / "rep" / "report.md")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| a | blip | task | 2 | 0.8750 | -0.1000 | 0.1000 | 0.300 | 10 | 3.0 |" in text
    assert "| b | finetune |" in text and "| – |" in text
    for name in ("a-accuracy-matrix.png", "b-accuracy-over-time.png", "capacity.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 1000


def test_report_without_matplotlib_still_prints_table(tmp_path):
    """With matplotlib unimportable the table prints and the report says plots were skipped."""
    a = fake_run(tmp_path / "a", "blip")
    code = ("import sys; sys.modules['matplotlib'] = None; from bitcl.cli import main; "
            f"sys.exit(main(['report', {str(a)!r}]))")
    import subprocess
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "| a | blip |" in done.stdout and "plots skipped" in done.stdout


def test_report_on_missing_run_is_exit_2(tmp_path):
    """A folder without results.json: one line, exit 2."""
    done = cli("report", tmp_path)
    assert done.returncode == 2 and "no results.json" in done.stderr


def test_report_shows_what_each_run_loaded(tmp_path, small_npz):
    """`bitcl report` lists each run's data source (results.json config.data_source)."""
    from bitcl.config import RunConfig
    from bitcl.engine import run
    from bitcl.report import write_report
    run(RunConfig(method="finetune", data=small_npz, epochs=1, hidden=[8], tasks=2, classes=[0, 1, 2, 3],
                  quiet=True, out=str(tmp_path / "r")))
    text = write_report([str(tmp_path / "r")])
    assert "mnist2k.npz" in text and "train [1600, 1, 28, 28]" in text and "evaluated on test" in text


def seeded_run(folder, method, seed, acc, options=None):
    """A results.json whose recorded config differs from its siblings' only where told."""
    folder.mkdir(parents=True)
    matrix = [[acc, 0.5], [acc, acc]]
    config = {"method": method, "benchmark": "split-mnist", "scenario": "task", "tasks": 2, "epochs": 1, "seed": seed,
              "method_options": options or {}, "out": str(folder), "quiet": True}
    res = {"bitcl_version": bitcl.__version__, "method": method, "scenario": "task", "tasks": 2,
           "accuracy_matrix": matrix, "acc": acc, "bwt": 0.0,
           "forgetting": 0.0, "timing": {"train_seconds": [1.0, 1.0]}, "memory": {"state_bytes": [0, 0]},
           "config": config}
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_report_groups_runs_that_differ_only_in_seed(tmp_path):
    """Runs differing only in seed form one group: mean ± half-width of the 95 % t interval (n), as
    bitcl.stats computes it; other settings (here EWC's c) make separate groups, labelled by them."""
    from bitcl import stats
    from bitcl.report import write_report
    runs = [seeded_run(tmp_path / f"ewc{c}-{s}", "ewc", s, acc, {"c": c})
            for c, accs in ((1.0, (0.80, 0.82, 0.84)), (100.0, (0.70, 0.71, 0.75))) for s, acc in enumerate(accs)]
    runs.append(seeded_run(tmp_path / "ft", "finetune", 0, 0.6))
    text = write_report([str(r) for r in runs], str(tmp_path / "rep" / "r.md"))
    assert "95 % Student t interval" in text
    expected = stats.summarize([0.80, 0.82, 0.84]).format(4)
    assert f"| ewc (c=1.0) | 0, 1, 2 | {expected} |" in text
    assert f"| ewc (c=100.0) | 0, 1, 2 | {stats.summarize([0.70, 0.71, 0.75]).format(4)} |" in text
    assert "| finetune | 0 | 0.6000 (n=1) |" in text
    assert (tmp_path / "rep" / "seeds-acc.png").stat().st_size > 1000


def test_report_without_repeated_settings_has_no_seed_table(tmp_path):
    """Runs that share no settings but the seed are not averaged together."""
    from bitcl.report import write_report
    a = seeded_run(tmp_path / "a", "ewc", 0, 0.8, {"c": 1.0})
    b = seeded_run(tmp_path / "b", "ewc", 1, 0.7, {"c": 100.0})
    assert "Over seeds" not in write_report([str(a), str(b)], str(tmp_path / "r.md"))


def _edit(run, **changes):
    res = json.loads((run / "results.json").read_text())
    res.update(changes)
    (run / "results.json").write_text(json.dumps(res))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("version", ["0.1.0", "9.0.0", "0.3.0"])
def test_results_of_another_contract_series_are_refused_by_report_and_rerun(tmp_path, version):
    """bitcl 0.2 reads results of 0.2.x only (a 0.x minor release may change the contract, as a major one
    does from 1.0): `report`, `rerun` and `run --config` exit 2 with one line naming both versions."""
    run = _edit(fake_run(tmp_path / "a", "blip"), bitcl_version=version, config={"method": "blip"})
    expected = (f"written by bitcl {version}; this bitcl {bitcl.__version__} reads results of 0.2.x only "
                f"(the results.json contract may differ)")
    for args in (["report", run], ["rerun", run, "--out", tmp_path / "again"],
                 ["run", "--config", run / "results.json", "--out", tmp_path / "again"]):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "again").exists()


def test_patch_versions_are_read_and_series_follow_semver():
    """Same major (same 0.minor below 1.0) is read, whatever the patch; anything else is refused."""
    from bitcl.versions import check_results_version, contract_series
    assert contract_series("0.2.7") == (0, 2) and contract_series("1.4.0") == (1,)
    check_results_version({"bitcl_version": "0.2.9"}, "f", current="0.2.0")
    check_results_version({"bitcl_version": "1.9.0"}, "f", current="1.0.3")
    for recorded, current in (("0.1.0", "0.2.0"), ("2.0.0", "1.0.0"), ("1.0.0", "0.9.0")):
        with pytest.raises(DataError, match=f"written by bitcl {recorded}"):
            check_results_version({"bitcl_version": recorded}, "f", current=current)
    for bad in ({}, {"bitcl_version": "x.y"}, {"bitcl_version": 2}):
        with pytest.raises(DataError):
            check_results_version(bad, "f")


@pytest.mark.parametrize("section, key, column", [("timing", "train_seconds", "train s"),
                                                  ("memory", "state_bytes", "state bytes")])
def test_a_missing_figure_is_an_error_not_a_zero(tmp_path, section, key, column):
    """results.json without timing.train_seconds (or memory.state_bytes): exit 2 naming the field and the
    column, instead of a table showing 'train s 0.0'."""
    run = fake_run(tmp_path / "a", "blip")
    res = json.loads((run / "results.json").read_text())
    del res[section][key]
    (run / "results.json").write_text(json.dumps(res))
    done = cli("report", run)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (f"bitcl report: error: {run / 'results.json'}: no {section}.{key} (the report's "
                                   f"{column} column); not a complete results.json")


def test_plots_of_task_counts_have_integer_ticks(tmp_path):
    """Heatmap axes, accuracy-over-time and capacity plots tick whole tasks only (no 0.5, 1.5)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bitcl import report
    runs = [("a", json.loads((fake_run(tmp_path / "a", "blip", [0.1, 0.3]) / "results.json").read_text()))]
    ticks = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        ticks[ax.get_xlabel()] = list(ax.get_xticks())
        if ax.get_ylabel() == "after training task":
            ticks["heatmap y"] = list(ax.get_yticks())
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        report._plots(runs, tmp_path / "plots")
    finally:
        plt.Figure.savefig = real_savefig
    assert set(ticks) == {"evaluated on task", "heatmap y", "after training task", "tasks learned"}
    for axis, values in ticks.items():
        assert values and all(float(v).is_integer() for v in values), (axis, values)
