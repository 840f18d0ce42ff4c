"""[select] sampler = "optuna": Optuna's TPE sampler proposes the candidates; every trial and the choice
are recorded like the grid's; a restarted sweep reruns nothing; bad specs stop with one line."""
import json
import math

import optuna
import pytest
from hypothesis import given, settings, strategies as st

from bitcl.errors import ConfigError
from bitcl.sweep import load_spec
from bitcl.sweep.optuna_select import suggest
from bitcl.sweep.spec import Select
from tests.conftest import cli
from tests.sweep.fake import FakeRuns, sweep

BASE = 'benchmark = "split-mnist"\ntasks = 2\nepochs = 1\nmethods = ["finetune", "ewc"]\nseeds = [0, 1]\n'
OPTUNA = '[select]\nsampler = "optuna"\noption = {ewc = "c"}\nlow = 1\nhigh = 10000\nn_trials = 6\nseeds = [0]\n'


def peaked(cfg):
    """Validation ACC peaks at c = 100 (test runs score the same way)."""
    c = cfg.method_options.get("c", 100.0)
    return 0.9 - 0.05 * abs(math.log10(c) - 2)


@pytest.fixture
def fake(monkeypatch):
    runs = FakeRuns(score=peaked)
    monkeypatch.setattr("bitcl.sweep.backends.execute", runs)
    return runs


def test_optuna_records_every_trial_and_chooses_the_best(tmp_path, fake):
    summary = sweep(tmp_path, BASE + OPTUNA)
    selection = summary["selection"]
    assert selection["sampler"] == "optuna" and selection["n_trials"] == 6 and selection["split"] == "validation"
    choice = selection["groups"]["split-mnist/ewc"]
    assert len(choice["trials"]) == 6 and [t["trial"] for t in choice["trials"]] == list(range(6))
    tried = [t["value"] for t in choice["trials"]]
    assert all(1 <= v <= 10000 for v in tried) and all(isinstance(v, float) for v in tried)
    scores = {c["value"]: c["acc"]["mean"] for c in choice["candidates"]}
    assert set(scores) == set(tried)  # every distinct trial is a candidate with its validation score
    assert choice["chosen"] == max(scores, key=scores.get)
    # each trial ran with --validation under select/; the test runs use the chosen value, at every seed
    validation = [c for c in fake.calls if "/select/" in c[c.index("--out") + 1]]
    assert len(validation) == len(set(tried)) and all("--validation" in c for c in validation)
    ewc_runs = [r for r in summary["runs"] if r["settings"]["method"] == "ewc"]
    assert len(ewc_runs) == 2 and all(r["settings"]["method_options"]["c"] == choice["chosen"] for r in ewc_runs)
    assert "split-mnist/finetune" not in selection["groups"]  # finetune has no c: not chosen, run once per seed
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "6 trials proposed by Optuna's TPE sampler" in text and f"split-mnist/ewc: c = {choice['chosen']!r}" in text


def test_optuna_is_seeded_so_a_restart_reruns_nothing(tmp_path, fake):
    first = sweep(tmp_path, BASE + OPTUNA)
    calls = len(fake.calls)
    second = sweep(tmp_path, BASE + OPTUNA)
    assert len(fake.calls) == calls, "a restarted optuna sweep ran a finished trial again"
    assert second["selection"]["groups"] == first["selection"]["groups"]
    other = sweep(tmp_path, BASE + OPTUNA.replace("n_trials = 6", "n_trials = 6\nsampler_seed = 5"), out="out2")
    assert [t["value"] for t in other["selection"]["groups"]["split-mnist/ewc"]["trials"]] != \
        [t["value"] for t in first["selection"]["groups"]["split-mnist/ewc"]["trials"]]


def test_optuna_among_listed_values_and_integer_settings(tmp_path, fake):
    summary = sweep(tmp_path, BASE.replace('["finetune", "ewc"]', '["ewc"]')
                    + '[select]\nsampler = "optuna"\noption = "batch_size"\nlow = 8\nhigh = 64\nn_trials = 3\n')
    tried = [t["value"] for t in summary["selection"]["groups"]["split-mnist/ewc"]["trials"]]
    assert all(isinstance(v, int) and 8 <= v <= 64 for v in tried)
    summary = sweep(tmp_path, BASE.replace('["finetune", "ewc"]', '["ewc"]')
                    + '[select]\nsampler = "optuna"\noption = "c"\nvalues = [10.0, 100.0, 1000.0]\nn_trials = 4\n',
                    out="out2")
    choice = summary["selection"]["groups"]["split-mnist/ewc"]
    assert {t["value"] for t in choice["trials"]} <= {10.0, 100.0, 1000.0}
    assert choice["chosen"] == max(choice["candidates"], key=lambda c: c["acc"]["mean"])["value"]


@settings(max_examples=40, deadline=None)
@given(low=st.floats(1e-8, 1e6), span=st.floats(1.0001, 1e4), log=st.booleans(), seed=st.integers(0, 1000))
def test_proposals_stay_inside_the_stated_range(low, span, log, seed):
    """Rounding to 4 significant digits never steps outside [low, high]."""
    high = low * span
    select = Select("c", None, sampler="optuna", n_trials=1, low=low, high=high, log=log, sampler_seed=seed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        value = suggest(study.ask(), select, "ewc", "c")
        assert low <= value <= high


@pytest.mark.parametrize("select, message", [
    ('sampler = "optuna"\noption = "c"\nlow = 1\nhigh = 100\n', "n_trials must be a positive integer"),
    ('sampler = "optuna"\noption = "c"\nlow = 100\nhigh = 1\nn_trials = 2\n', "low must be below high"),
    ('sampler = "optuna"\noption = "c"\nlow = 0\nhigh = 1\nn_trials = 2\n', "log = true needs low > 0"),
    ('sampler = "optuna"\noption = "c"\nn_trials = 2\n', "needs values, or numbers low and high"),
    ('sampler = "optuna"\noption = "c"\nlow = 1\nhigh = 10\nvalues = [1, 10]\nn_trials = 2\n', "not both"),
    ('sampler = "optuna"\noption = ["c", "lr"]\nlow = 1\nhigh = 10\nn_trials = 2\n', "one option per method"),
    ('sampler = "optuna"\noption = "c"\nlow = 1\nhigh = 10\nn_trials = 2\nextend = 1\n', "widen low/high"),
    ('sampler = "tpe"\noption = "c"\nvalues = [1, 10]\n', "sampler must be one of grid, optuna"),
    ('option = "c"\nvalues = [1, 10]\nn_trials = 3\n', 'apply only with sampler = "optuna"'),
])
def test_bad_optuna_specs_are_refused(tmp_path, select, message):
    path = tmp_path / "spec.toml"
    path.write_text('method = "ewc"\n[select]\n' + select)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_spec(path)


def test_without_optuna_the_spec_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "optuna", None)  # import optuna now raises ImportError
    path = tmp_path / "spec.toml"
    path.write_text('method = "ewc"\n' + OPTUNA.replace("{ewc = \"c\"}", '"c"'))
    with pytest.raises(ConfigError, match=r"needs Optuna: pip install 'bitcl\[sweep\]'"):
        load_spec(path)


@pytest.mark.slow
def test_optuna_sweep_end_to_end_on_tiny_data(tmp_path, small_npz):
    """Real `bitcl run` processes: two trials on the validation hold-out, then the chosen c on the test split."""
    spec = tmp_path / "spec.toml"
    spec.write_text(f'benchmark = "split-mnist"\ntasks = 2\nepochs = 1\nhidden = [16]\nclasses = [0, 1, 2, 3]\n'
                    f'data = "{small_npz}"\nmethod = "ewc"\nseeds = [0]\n'
                    '[select]\nsampler = "optuna"\noption = "c"\nlow = 1\nhigh = 1000\nn_trials = 2\n')
    out = tmp_path / "out"
    done = cli("sweep", spec, "--out", out)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    choice = summary["selection"]["groups"]["split-mnist/ewc"]
    assert len(choice["trials"]) == 2 and choice["chosen"] in [t["value"] for t in choice["trials"]]
    (run,) = summary["runs"]
    results = json.loads((out / run["name"] / "results.json").read_text())
    assert results["config"]["method_options"]["c"] == choice["chosen"] and results["config"]["validation"] == 0
    assert len(list((out / "select").rglob("results.json"))) == len({t["value"] for t in choice["trials"]})
    bad = tmp_path / "bad.toml"
    bad.write_text('method = "ewc"\n[select]\nsampler = "optuna"\noption = "c"\nlow = 1\nhigh = 10\n')
    refused = cli("sweep", bad, "--out", tmp_path / "out2")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("bitcl sweep: error:") and "n_trials" in refused.stderr
