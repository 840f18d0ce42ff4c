"""results.json: valid JSON that is not bitcl results is refused with one line (report, analyze, rerun)."""
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitcl.errors import DataError
from bitcl.train import validate
from bitcl.train.validate import read_results
from tests.robustness import fixtures as fx


def _set(path, value):
    return lambda r: fx.set_path(r, path, value) and None


BAD_RESULTS = [
    ("a list", lambda r: ("replace", [r]), "expected a JSON object, got a list"),
    ("no method", lambda r: r.pop("method"), "missing key 'method'"),
    ("method a number", _set(["method"], 3), "'method' must be a string"),
    ("no matrix", lambda r: r.pop("accuracy_matrix"), "missing key 'accuracy_matrix'"),
    ("matrix empty", _set(["accuracy_matrix"], []), "non-empty list of rows"),
    ("matrix not square", _set(["accuracy_matrix"], [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]), "must be 2 x 2 (every task evaluated"),
    ("matrix rows of dicts", _set(["accuracy_matrix"], [{"a": 1}, {"b": 2}]), "must be a list, got an object"),
    ("accuracy above 1", _set(["accuracy_matrix", 0, 0], 1.5), "accuracy_matrix[0][0] must lie in [0, 1]"),
    ("accuracy a string", _set(["accuracy_matrix", 1, 1], "0.9"), "must be a number, got a string"),
    ("accuracy true", _set(["accuracy_matrix", 1, 1], True), "must be a number, got a boolean"),
    ("acc NaN", _set(["acc"], float("nan")), "acc must be finite"),
    ("acc inconsistent", _set(["acc"], 0.99), "disagrees with its accuracy_matrix"),
    ("bwt missing", lambda r: r.pop("bwt"), "missing key 'bwt'"),
    ("tasks mismatch", _set(["tasks"], 5), "tasks must lie in 2..2"),
    ("seed huge", _set(["seed"], 2 ** 70), "seed must lie in"),
    ("code digest short", _set(["code_digest"], "abc"), "code_digest must be 64 lowercase hex digits"),
    ("code digest a number", _set(["code_digest"], 7), "'code_digest' must be a string"),
    ("capacity length", _set(["capacity"], [0.1]), "capacity has 1 entries, expected 2"),
    ("capacity above 1", _set(["capacity"], [0.1, 3.0]), "capacity[1] must lie in [0, 1]"),
    ("timing strings", _set(["timing", "train_seconds"], ["1", "2"]), "must be a number, got a string"),
    ("timing negative", _set(["timing", "eval_seconds"], [-1.0, 1.0]), "must lie in [0, inf]"),
    ("state bytes negative", _set(["memory", "state_bytes"], [1, -1]), "state_bytes[1] must lie in 0..inf"),
    ("memory a list", _set(["memory"], [1, 2]), "memory: expected a JSON object"),
    # found by tests/fuzz/fuzz_checkpoint.py: a null optional key was taken for an absent one
    ("timing null", _set(["timing"], None), "timing: expected a JSON object, got null"),
    ("capacity null", _set(["capacity"], None), "'capacity' must be a list, got null"),
    ("config a string", _set(["config"], "blip"), "config: expected a JSON object"),
    ("rl games mismatch", lambda r: r.update(games=["a"], return_matrix=[[1.0, 2.0]]), "has 2 entries, expected 1"),
]


def _results_of(change) -> object:
    r = fx.results()
    out = change(r)
    return out[1] if isinstance(out, tuple) and out[0] == "replace" else r


@pytest.mark.parametrize("name, change, message", BAD_RESULTS, ids=[c[0] for c in BAD_RESULTS])
def test_results_that_are_not_results_are_refused(tmp_path, name, change, message):
    """Each single defect is a DataError naming the file and the key, in one line."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results_of(change)))
    with pytest.raises(DataError) as caught:
        read_results(tmp_path)
    text = str(caught.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_rl_results_with_an_unlearned_game_are_valid(tmp_path):
    """bitcl rl writes null normalised values (and score) for a game that never beat random play: valid;
    a return matrix with a string in it is not."""
    from bitcl.rl.results import forgetting, normalised_matrix, score
    returns, random = [[1.0, 0.0], [1.0, 0.0]], [0.0, 0.0]
    norm = normalised_matrix(returns, random, [1.0, 0.0], [True, False])
    r = {"method": "blip", "games": ["a", "b"], "tasks": 2, "return_matrix": returns, "random_returns": random,
         "normalised_matrix": norm, "score": score(norm)[0], "forgetting": forgetting(norm)[0],
         "timing": {"steps_per_second": [5.0, 6.0]}, "memory": {"params": 1, "state_bytes": [0, 0]}}
    assert norm[0][1] is None
    (tmp_path / "results.json").write_text(json.dumps(r))
    assert read_results(tmp_path)["games"] == ["a", "b"]
    r["return_matrix"][1][0] = "1.0"
    (tmp_path / "results.json").write_text(json.dumps(r))
    with pytest.raises(DataError, match=r"return_matrix\[1\]\[0\] must be a number"):
        read_results(tmp_path)


def test_unreadable_results(tmp_path, monkeypatch):
    """Not JSON, not UTF-8, deeply nested, too large, missing: one-line DataError."""
    path = tmp_path / "results.json"
    for blob, message in ((b"{", "not valid JSON"), (b"\xff\xfe\x00", "not valid JSON"),
                          (b"[" * 100000 + b"]" * 100000, "not valid JSON")):
        path.write_bytes(blob)
        with pytest.raises(DataError, match=message):
            read_results(path)
    path.write_text(json.dumps(fx.results()))
    monkeypatch.setattr(validate, "MAX_RESULTS_BYTES", 100)
    with pytest.raises(DataError, match="too large for a results.json"):
        read_results(path)
    with pytest.raises(DataError, match="no such results file"):
        read_results(tmp_path / "missing")


def test_valid_results_and_required_keys(tmp_path):
    """A consistent file is returned unchanged; ``require`` names keys a caller needs (rerun: config)."""
    r = fx.results()
    (tmp_path / "results.json").write_text(json.dumps(r))
    assert read_results(tmp_path) == r
    del r["config"]
    (tmp_path / "results.json").write_text(json.dumps(r))
    with pytest.raises(DataError, match="missing key 'config'"):
        read_results(tmp_path, require=("config",))


JSON = fx.json_values()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_is_accepted_or_refused_cleanly(tmp_path_factory, data):
    """Property: replacing any node of a valid results.json with arbitrary JSON gives a file that
    validates or a DataError, and a file that `bitcl report` loads (validated, this bitcl's version, every figure
    of the table present) can be tabulated."""
    from bitcl.report import load_results, table
    r = fx.results()
    spots = [p for p in fx.json_paths(r) if p]
    fx.set_path(r, data.draw(st.sampled_from(spots)), data.draw(JSON))
    folder = tmp_path_factory.mktemp("r")
    (folder / "results.json").write_text(json.dumps(copy.deepcopy(r)))
    try:
        valid = load_results(folder)
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert "| x |" in table([("x", valid)])


def test_report_refuses_to_overwrite_a_runs_files(tmp_path, capsys):
    """`bitcl report RUN --out RUN/results.json` (or log.txt) exits 2 and leaves the run's file as it was."""
    from bitcl.cli import main
    run = fx.write_run(tmp_path / "run", checkpoints=False)
    before = (run / "results.json").read_bytes()
    for name in ("results.json", "log.txt", "checkpoints/report.md"):
        assert main(["report", str(run), "--out", str(run / name)]) == 2
        err = capsys.readouterr().err
        assert "write it elsewhere" in err and err.count("\n") == 1
    assert (run / "results.json").read_bytes() == before and not (run / "checkpoints").exists()


def test_report_of_runs_with_the_same_folder_name_keeps_both_plots(tmp_path):
    """Runs a/run and b/run get distinct plot names (a-run-..., b-run-...), none overwriting the other."""
    pytest.importorskip("matplotlib")
    from bitcl.report import write_report
    a = fx.write_run(tmp_path / "a" / "run", checkpoints=False)
    b = fx.write_run(tmp_path / "b" / "run", checkpoints=False)
    text = write_report([str(a), str(b)], str(tmp_path / "out" / "report.md"))
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == ["a-run-accuracy-matrix.png", "a-run-accuracy-over-time.png", "b-run-accuracy-matrix.png",
                     "b-run-accuracy-over-time.png", "capacity.png"]
    assert "| a-run | blip |" in text and "| b-run | blip |" in text
