"""benchmarks/figures_status.py: a result is current only while the code that decides it is HEAD's."""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _commit(root: Path, message: str) -> str:
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", message], check=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A throw-away checkout: bitcl/, docs/, a benchmark script and figures_status.py imported from there."""
    for folder in ("bitcl", "docs", "benchmarks/results"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "figures_status.py", tmp_path / "benchmarks" / "figures_status.py")
    (tmp_path / "bitcl" / "core.py").write_text("x = 1\n")
    (tmp_path / "docs" / "page.md").write_text("text\n")
    (tmp_path / "benchmarks" / "bench_a.py").write_text("print(1)\n")
    (tmp_path / "benchmarks" / "bench_b.py").write_text("print(2)\n")
    (tmp_path / "constraints.txt").write_text("# pins\nnumpy==2.4.6\ngymnasium==1.4.0\ntorch==2.13.0\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    made_at = _commit(tmp_path, "code")
    spec = importlib.util.spec_from_file_location("figures_status_under_test",
                                                  tmp_path / "benchmarks" / "figures_status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp_path, module, made_at


PINNED = {"numpy": "2.4.6", "gymnasium": "1.4.0"}


def _result(root: Path, name: str, commit: str, script: str = "benchmarks/bench_a.py", packages=PINNED) -> None:
    record = {"acc": 0.5, "environment": {"git_commit": commit, "command": f"python {script} --quick",
                                          "date": "2026-12-06T00:00:00+00:00", "packages": packages}}
    (root / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(record))


def test_a_result_stays_current_through_changes_that_cannot_move_its_numbers(repo):
    root, module, made_at = repo
    _result(root, "a", made_at)
    _commit(root, "the result")
    (root / "docs" / "page.md").write_text("more text\n")
    (root / "benchmarks" / "bench_b.py").write_text("print(3)\n")  # another benchmark's script
    _commit(root, "docs and another script")
    [entry] = module.statuses(str(root / "benchmarks" / "results"))
    assert entry["current"] and entry["changed"] == [], entry
    assert module.main([]) == 0 and module.main(["--strict"]) == 0


@pytest.mark.parametrize("changed", ["bitcl/core.py", "benchmarks/bench_a.py"])
def test_a_change_to_the_package_or_the_results_own_script_makes_it_stale(repo, changed, capsys):
    root, module, made_at = repo
    _result(root, "a", made_at)
    (root / changed).write_text("changed = True\n")
    _commit(root, "code change")
    [entry] = module.statuses(str(root / "benchmarks" / "results"))
    assert not entry["current"] and entry["changed"] == [changed]
    assert module.main(["--strict"]) == 1
    assert f"NOT CURRENT: 1 file(s) changed since: {changed}" in capsys.readouterr().out


def test_uncommitted_and_unknown_commits_are_never_current(repo):
    root, module, made_at = repo
    _result(root, "dirty", made_at + "+uncommitted")
    _result(root, "elsewhere", "0" * 40)
    _commit(root, "results")
    found = {Path(e["file"]).stem: e for e in module.statuses(str(root / "benchmarks" / "results"))}
    assert "uncommitted" in found["dirty"]["problem"] and not found["dirty"]["current"]
    assert "not in this clone's history" in found["elsewhere"]["problem"] and not found["elsewhere"]["current"]


def test_the_total_counts_each_scripts_wall_time_once(repo, capsys):
    root, module, made_at = repo
    for name, script, seconds in (("a", "benchmarks/bench_a.py", 3600), ("a_twin", "benchmarks/bench_a.py", 3600),
                                  ("b", "benchmarks/bench_b.py", 1800)):
        _result(root, name, made_at, script)
        path = root / "benchmarks" / "results" / f"{name}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "wall_seconds": seconds}))
    _commit(root, "results")
    assert module.total_hours(module.statuses(str(root / "benchmarks" / "results"))) == 1.5
    module.main([])
    assert "ran 1.5 h of wall time" in capsys.readouterr().out


def test_a_result_made_with_other_or_unrecorded_package_versions_is_not_current(repo, capsys):
    """The same code with another gymnasium is another figure (the MinAtar runs moved so): only a
    result that records the pinned versions is current."""
    root, module, made_at = repo
    _result(root, "pinned", made_at)
    _result(root, "other", made_at, packages={"numpy": "2.4.6", "gymnasium": "1.2.0"})
    _result(root, "unrecorded", made_at, packages=None)
    _commit(root, "results")
    found = {Path(e["file"]).stem: e for e in module.statuses(str(root / "benchmarks" / "results"))}
    assert found["pinned"]["current"]
    assert not found["other"]["current"] and found["other"]["code_current"]
    assert found["other"]["packages"] == "made with gymnasium 1.2.0 (pinned 1.4.0)"
    assert not found["unrecorded"]["current"] and found["unrecorded"]["packages"] == "package versions not recorded"
    assert module.main(["--strict"]) == 1
    assert "1 of 3 results were made by the code at HEAD with the pinned packages; 2 more" in capsys.readouterr().out


def test_the_environment_module_decides_no_figure(repo):
    """benchmarks/_env.py records provenance only: changing it leaves results current."""
    root, module, made_at = repo
    _result(root, "a", made_at)
    (root / "benchmarks" / "_env.py").write_text("RECORDED = 1\n")
    (root / "benchmarks" / "_timing.py").write_text("BEST = min\n")
    _commit(root, "helpers")
    [entry] = module.statuses(str(root / "benchmarks" / "results"))
    assert entry["changed"] == ["benchmarks/_timing.py"], entry  # a helper that can decide numbers counts


def test_a_result_kept_as_a_before_is_listed_never_current_and_needs_its_replacement(repo, monkeypatch):
    root, module, made_at = repo
    monkeypatch.setattr(module, "KEPT_AS_BEFORE", {"old.json": "new.json"})
    _result(root, "old", made_at)
    _commit(root, "the old result")
    (root / "bitcl" / "core.py").write_text("x = 2\n")  # the code moved on; old.json is stale
    new_at = _commit(root, "code")
    results = str(root / "benchmarks" / "results")
    [entry] = module.statuses(results)
    assert entry["problem"] == "kept as the before of new.json, which is missing"
    assert module.main(["--strict"]) == 1
    _result(root, "new", new_at)
    _commit(root, "the new result")
    new, old = module.statuses(results)  # sorted by name
    assert new["current"] and new.get("before_of") is None
    assert old["before_of"] == "new.json" and not old["current"]
    assert "kept as the before of new.json" in module.describe(old)
    assert module.main(["--strict"]) == 0  # the kept file does not fail --strict ...
    monkeypatch.setattr(module, "KEPT_AS_BEFORE", {})
    assert module.main(["--strict"]) == 1  # ... but the same stale file, not declared, does


def test_every_package_a_result_records_is_pinned_in_constraints(monkeypatch):
    """figures_status can compare a result's package versions only with a pin: an unpinned package
    that can move a figure (stable-baselines3 was one) would let `make figures` install any version."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from _env import PACKAGES
    from figures_status import pinned_versions

    pins = pinned_versions(str(REPO / "constraints.txt"))
    assert [name for name in PACKAGES if name.lower().replace("_", "-") not in pins] == []
