"""The sweep's bookkeeping with a stand-in for `bitcl run` (tests/sweep/fake.py): idempotence,
resumption, retries, the validation choice and the summary's statistics."""
import json
import math

import pytest

from bitcl import stats
from bitcl.errors import ConfigError
from bitcl.sweep import load_spec
from bitcl.versions import code_digest
from tests.sweep.fake import FakeRuns, sweep

SPEC = 'benchmark = "split-mnist"\ntasks = 2\nepochs = 1\nmethods = ["finetune", "ewc"]\nseeds = [0, 1, 2]\n'


@pytest.fixture
def fake(monkeypatch):
    def install(**kwargs):
        runs = FakeRuns(**kwargs)
        monkeypatch.setattr("bitcl.sweep.backends.execute", runs)
        return runs
    return install


def test_finished_runs_are_not_rerun(tmp_path, fake):
    runs = fake()
    first = sweep(tmp_path, SPEC)
    assert len(runs.calls) == 6 and not first["failed"]
    second = sweep(tmp_path, SPEC)
    assert len(runs.calls) == 6, "a finished run was run again"
    assert all(r["reused"] for r in second["runs"])
    assert second["benchmarks"] == first["benchmarks"]


@pytest.mark.parametrize("digest", ["0" * 64, None])
def test_a_run_made_by_other_code_is_run_again(tmp_path, fake, digest):
    """A finished run whose results.json records another code_digest (or none: older bitcl) is rerun
    with --overwrite, which keeps the old run until the new one completes; the others are reused."""
    runs = fake()
    sweep(tmp_path, SPEC)
    path = tmp_path / "out" / "split-mnist" / "ewc" / "seed=1" / "results.json"
    old = json.loads(path.read_text())
    if digest is None:
        del old["code_digest"]
    else:
        old["code_digest"] = digest
    path.write_text(json.dumps(old))
    second = sweep(tmp_path, SPEC)
    assert runs.calls[6:] == [runs.calls[6]] and "--overwrite" in runs.calls[6] and "--resume" not in runs.calls[6]
    assert runs.calls[6][runs.calls[6].index("--out") + 1].endswith("ewc/seed=1")
    assert json.loads(path.read_text())["code_digest"] == code_digest()
    assert sum(not r["reused"] for r in second["runs"]) == 1


def test_interrupted_run_continues_with_resume(tmp_path, fake):
    """A run folder holding checkpoints but no results.json is continued, not restarted."""
    runs = fake()
    (tmp_path / "out" / "split-mnist" / "ewc" / "seed=1" / "checkpoints").mkdir(parents=True)
    sweep(tmp_path, SPEC)
    resumed = [c for c in runs.calls if "--resume" in c]
    assert len(resumed) == 1 and resumed[0][resumed[0].index("--out") + 1].endswith("ewc/seed=1")


def test_failed_run_is_retried_then_reported(tmp_path, fake):
    runs = fake(fail={"ewc/seed=2": 1})
    summary = sweep(tmp_path, SPEC + "retries = 1\n")
    assert not summary["failed"]
    record = next(r for r in summary["runs"] if r["name"].endswith("ewc/seed=2"))
    assert record["attempts"] == 2 and record["status"] == "done"
    assert len(runs.calls) == 7

    fake(fail={"finetune/seed=0": 5})
    summary = sweep(tmp_path, SPEC + "retries = 2\n", out="out2")
    assert summary["failed"] == [{"name": "split-mnist/finetune/seed=0", "attempts": 3,
                                  "error": "bitcl run: error: simulated failure"}]
    finetune = next(r for r in summary["benchmarks"]["split-mnist"]["ranking"] if r["configuration"] == "finetune")
    assert finetune["n"] == 2, "a failed run must not count towards the mean"
    assert "simulated failure" in (tmp_path / "out2" / "summary.md").read_text()


def test_a_folder_holding_other_settings_is_refused(tmp_path, fake):
    fake()
    sweep(tmp_path, SPEC)
    with pytest.raises(ConfigError, match=r"holds a finished run with epochs=1, but the sweep asks for 2"):
        sweep(tmp_path, SPEC.replace("epochs = 1", "epochs = 2"))


def test_a_setting_the_run_resolves_is_compared_as_resolved(tmp_path, fake):
    """A run records --bn auto as the policy it resolved to (train in a class-incremental run): the
    sweep reuses that finished run, and still refuses one made with another policy."""
    runs = fake()
    spec = SPEC + 'scenario = "class"\narch = "resnet18"\nbn = "auto"\n'
    sweep(tmp_path, spec)
    recorded = json.loads(next((tmp_path / "out").rglob("results.json")).read_text())
    assert recorded["config"]["bn"] == "train"
    sweep(tmp_path, spec)
    assert len(runs.calls) == 6, "a finished run was run again"
    with pytest.raises(ConfigError, match=r"holds a finished run with bn='train', but the sweep asks for 'per-task'"):
        sweep(tmp_path, spec.replace('bn = "auto"', 'bn = "per-task"'))


def test_summary_statistics_come_from_bitcl_stats(tmp_path, fake):
    """Mean, interval, ranking and Welch's p agree with bitcl.stats on the runs' own figures."""
    scores = {("finetune", 0): 0.50, ("finetune", 1): 0.52, ("finetune", 2): 0.51,
              ("ewc", 0): 0.70, ("ewc", 1): 0.72, ("ewc", 2): 0.69}
    fake(score=lambda cfg: scores[(cfg.method, cfg.seed)])
    summary = sweep(tmp_path, SPEC)
    ranking = summary["benchmarks"]["split-mnist"]["ranking"]
    assert [r["configuration"] for r in ranking] == ["ewc", "finetune"]
    ewc_acc = [r["results"]["acc"] for r in summary["runs"] if "/ewc/" in r["name"]]
    ft_acc = [r["results"]["acc"] for r in summary["runs"] if "/finetune/" in r["name"]]
    assert ranking[0]["acc"] == stats.summarize(ewc_acc).as_dict()
    assert math.isclose(ranking[1]["p_vs_best"], stats.welch_p(ewc_acc, ft_acc))
    assert ranking[1]["significantly_below_best"] is True
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["interval_kind"] == "t" and saved["benchmarks"] == json.loads(json.dumps(summary["benchmarks"]))
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "95 % Student t interval" in text and f"{ranking[0]['acc']['mean']:.4f} ± " in text
    assert (tmp_path / "out" / "plots" / "split-mnist-acc.png").stat().st_size > 1000


def test_close_results_are_flagged_not_significant(tmp_path, fake):
    fake(score=lambda cfg: 0.6 + 0.01 * ((cfg.seed + (cfg.method == "ewc")) % 3))
    ranking = sweep(tmp_path, SPEC)["benchmarks"]["split-mnist"]["ranking"]
    assert ranking[1]["significantly_below_best"] is False
    assert "not significant" in (tmp_path / "out" / "summary.md").read_text()


def test_strength_chosen_on_validation_then_run_on_test(tmp_path, fake):
    """[select]: candidates run with --validation; the best mean is recorded and run on the test split;
    extend adds a decade while the best is on an edge."""
    # validation ACC peaks at c = 1000, beyond the given grid: one extension finds it, the next confirms it
    runs = fake(score=lambda cfg: 0.9 - 0.05 * abs(math.log10(cfg.method_options["c"]) - 3)
                if cfg.method == "ewc" else 0.5)
    summary = sweep(tmp_path, SPEC.replace("seeds = [0, 1, 2]", "seeds = [0, 1]")
                    + '[select]\noption = "c"\nvalues = [1, 10, 100]\nfraction = 0.2\nseeds = [0]\nextend = 2\n')
    choice = summary["selection"]["groups"]["split-mnist/ewc"]
    assert choice["chosen"] == 1000.0 and not choice["on_edge"]
    assert [c["value"] for c in choice["candidates"]] == [1, 10, 100, 1000.0, 10000.0]
    validation = [c for c in runs.calls if "--validation" in c]
    assert len(validation) == 5 and all(c[c.index("--validation") + 1] == "0.2" for c in validation)
    assert all("/select/" in c[c.index("--out") + 1] for c in validation)
    test = [c for c in runs.calls if "--validation" not in c]
    assert sorted(c[c.index("--out") + 1].split("/out/")[1] for c in test) == [
        "split-mnist/ewc/c=1000.0/seed=0", "split-mnist/ewc/c=1000.0/seed=1",
        "split-mnist/finetune/seed=0", "split-mnist/finetune/seed=1"]
    assert summary["selection"]["metric"] == "acc" and summary["selection"]["split"] == "validation"


def test_strengths_per_method(tmp_path, fake):
    """option and values may be per method: EWC's c and ANPyC's lam on their own scales."""
    runs = fake(score=lambda cfg: {"ewc": lambda o: -abs(o["c"] - 1000), "anpyc": lambda o: -abs(o["lam"] - 10)}
                .get(cfg.method, lambda o: 0)(cfg.method_options) / 1e5 + 0.5)
    text = SPEC.replace('methods = ["finetune", "ewc"]', 'methods = ["finetune", "ewc", "anpyc"]')
    summary = sweep(tmp_path, text.replace("seeds = [0, 1, 2]", "seeds = [0]")
                    + '[select]\noption = {ewc = "c", anpyc = "lam"}\n'
                      'values = {ewc = [100, 1000], anpyc = [10, 100]}\n')
    groups = summary["selection"]["groups"]
    assert groups["split-mnist/ewc"]["option"] == "c" and groups["split-mnist/ewc"]["chosen"] == 1000
    assert groups["split-mnist/anpyc"]["option"] == "lam" and groups["split-mnist/anpyc"]["chosen"] == 10
    assert sorted(r["name"] for r in summary["runs"]) == ["split-mnist/anpyc/lam=10/seed=0",
                                                         "split-mnist/ewc/c=1000/seed=0", "split-mnist/finetune/seed=0"]
    assert len(runs.calls) == 7


def test_select_refuses_an_option_a_method_lacks(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('methods = ["ewc", "anpyc"]\n[select]\noption = {ewc = "lam"}\nvalues = [1, 10]\n')
    with pytest.raises(ConfigError, match="'lam' is not an option of method 'ewc'"):
        load_spec(path)


def test_settings_chosen_together(tmp_path, fake):
    """option = [names], values = [[...], ...]: joint candidates, as the presets search uses."""
    fake(score=lambda cfg: 0.5 + (cfg.lr == 0.006 and cfg.batch_size == 32) * 0.1)
    summary = sweep(tmp_path, 'method = "finetune"\ntasks = 2\nepochs = 1\nseeds = [0, 1]\n[select]\n'
                              'option = ["lr", "batch_size"]\nvalues = [[0.003, 64], [0.006, 32], [0.006, 64]]\n')
    choice = summary["selection"]["groups"]["split-mnist/finetune"]
    assert choice["option"] == ("lr", "batch_size") and choice["chosen"] == (0.006, 32)
    assert [c["value"] for c in choice["candidates"]] == [(0.003, 64), (0.006, 32), (0.006, 64)]
    assert sorted(r["name"] for r in summary["runs"]) == ["split-mnist/finetune/batch_size=32/lr=0.006/seed=0",
                                                         "split-mnist/finetune/batch_size=32/lr=0.006/seed=1"]
    assert "batch_size = 32" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("metric, chosen", [("min_diagonal", 0.03), ("acc", 0.1)])
def test_min_diagonal_chooses_the_candidate_that_learns_every_task(tmp_path, fake, metric, chosen):
    """min_diagonal scores each candidate by its worst task just after learning it, whatever it
    forgets later: lr 0.03 learns both tasks (0.99, 0.985) and forgets, lr 0.1 keeps more (higher ACC)
    but learns task 1 to 0.9 only."""
    fake(matrix=lambda cfg: [[0.99, 0.0], [0.5, 0.985]] if cfg.lr == 0.03 else [[0.99, 0.0], [0.95, 0.9]])
    summary = sweep(tmp_path, 'benchmark = "split-mnist"\ntasks = 2\nepochs = 1\nmethods = ["finetune"]\n'
                              f'seeds = [0]\n[select]\noption = "lr"\nvalues = [0.03, 0.1]\nmetric = "{metric}"\n')
    choice = summary["selection"]["groups"]["split-mnist/finetune"]
    assert choice["chosen"] == chosen
    assert [c[metric]["mean"] for c in choice["candidates"]] == (
        [0.985, 0.9] if metric == "min_diagonal" else [pytest.approx(0.7425), pytest.approx(0.925)])
    assert [r["results"]["min_diagonal"] for r in summary["selection_runs"]] == [0.985, 0.9]
