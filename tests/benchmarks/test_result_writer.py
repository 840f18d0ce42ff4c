"""benchmarks/_env.py: a committed figure is written only from a clean tree, with its provenance."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_repo(tmp_path, monkeypatch):
    """A throw-away git checkout holding benchmarks/_env.py, imported from there."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "_env.py", tmp_path / "benchmarks" / "_env.py")
    (tmp_path / "code.py").write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "init"], check=True)
    spec = importlib.util.spec_from_file_location("bench_env_under_test", tmp_path / "benchmarks" / "_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "benchmarks" / "bench_x.py"), "--quick"])
    return tmp_path, module


def test_clean_tree_writes_the_figure_with_commit_command_and_wall_time(bench_repo):
    root, env = bench_repo
    path = Path(env.write_result("demo", {"acc": 0.5}))
    assert path == root / "benchmarks" / "results" / "demo.json"
    record = json.loads(path.read_text())
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["acc"] == 0.5 and record["environment"]["git_commit"] == head
    assert record["environment"]["command"] == "python benchmarks/bench_x.py --quick"
    assert record["wall_seconds"] >= 0


def test_dirty_tree_writes_a_draft_never_a_figure(bench_repo, capsys):
    """A modified tracked file or an untracked source file sends the result to benchmarks/out/."""
    root, env = bench_repo
    (root / "code.py").write_text("x = 2\n")
    path = Path(env.write_result("demo", {"acc": 0.5}))
    assert path == root / "benchmarks" / "out" / "demo.json"
    assert not (root / "benchmarks" / "results" / "demo.json").exists()
    assert json.loads(path.read_text())["environment"]["git_commit"].endswith("+uncommitted")
    assert "not clean (code.py)" in capsys.readouterr().err
    subprocess.run(["git", "-C", str(root), "checkout", "-q", "code.py"], check=True)
    (root / "new_module.py").write_text("y = 1\n")
    assert Path(env.write_result("demo", {})).parent.name == "out"
    (root / "new_module.py").unlink()
    (root / "notes.log").write_text("not source\n")      # untracked non-source files do not count
    assert Path(env.write_result("demo", {})).parent.name == "results"
