"""bitcl report: the comparison table and plots, from real results.json files."""
import json
import sys

from tests.conftest import cli


def fake_run(folder, method, capacity=None):
    folder.mkdir()
    matrix = [[0.9, 0.5], [0.8, 0.95]]
    res = {"method": method, "scenario": "task", "tasks": 2, "accuracy_matrix": matrix, "acc": 0.875, "bwt": -0.1,
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
    res = {"method": method, "scenario": "task", "tasks": 2, "accuracy_matrix": matrix, "acc": acc, "bwt": 0.0,
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
