"""The run directory: one owner (flock), --overwrite that never loses the old run, leftovers cleaned,
a full disk that leaves the previous checkpoint intact, and writers refused inside a run."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bitcl import checkpoint as ckpt
from bitcl.errors import CheckpointError, ConfigError, EnvironmentFault
from bitcl.train.rundir import LOCK_NAME, STAGING_MARK, RunDirectory, refuse_run_file
from tests.robustness import fixtures as fx

ROOT = Path(__file__).resolve().parents[2]


def tree(folder: Path) -> dict:
    """Every file under ``folder`` (relative path -> bytes), the lock excluded."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def holder(out: Path, overwrite: bool = False, then: str = "time.sleep(60)") -> subprocess.Popen:
    """Another process that opens ``out`` as its run directory, writes a little, then does ``then``."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from bitcl.train.rundir import RunDirectory
        r = RunDirectory({str(out)!r}, overwrite={overwrite})
        r.open()
        (r.path / "checkpoints").mkdir(exist_ok=True)
        (r.path / "checkpoints" / ".task-0.safetensors.tmp123").write_bytes(b"half")
        (r.path / "log.txt").write_text("new run\\n")
        print(r.path, flush=True)
        {then}
    """)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip(), "the holder did not start"
    return p


def test_second_owner_is_refused_while_the_first_lives(tmp_path):
    """A live run's lock refuses another RunDirectory on the same folder, naming the owner's pid."""
    p = holder(tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=rf"in use by another bitcl run \(pid {p.pid} "):
            RunDirectory(tmp_path / "run", overwrite=True).open()
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_killed_process_is_taken_over_and_its_leftovers_cleaned(tmp_path):
    """After kill -9 of the owner, the next start takes the lock and removes its temporary files."""
    out = tmp_path / "run"
    p = holder(out, then="os.kill(os.getpid(), 9)")
    assert p.wait() == -signal.SIGKILL
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == p.pid  # the dead owner's lock is still there
    r = RunDirectory(out, resume=True)
    r.open()
    assert not (out / "checkpoints" / ".task-0.safetensors.tmp123").exists()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    r.close(True)
    assert not (out / LOCK_NAME).exists()


def test_overwrite_swaps_only_on_success_and_keeps_user_files(tmp_path):
    """--overwrite builds beside the old run; on success the old run files are gone, the user's stay."""
    out = fx.write_run(tmp_path / "run", checkpoints=False)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "task-0.safetensors").write_bytes(b"old")
    (out / "notes.md").write_text("mine")
    (out / "bits.json").write_text("{}")  # an analysis of the old run goes with it
    r = RunDirectory(out, overwrite=True)
    r.open()
    assert r.path == tmp_path / f"run.new-{os.getpid()}" and r.path.is_dir()
    assert (out / "results.json").exists()  # the old run is untouched while the new one runs
    (r.path / "results.json").write_text('{"new": 1}')
    r.close(True)
    assert r.path == out and (out / "results.json").read_text() == '{"new": 1}'
    assert (out / "notes.md").read_text() == "mine"
    assert not (out / "checkpoints").exists() and not (out / "bits.json").exists()
    assert not (out / STAGING_MARK).exists() and sorted(os.listdir(tmp_path)) == ["run"]
    assert not (out / LOCK_NAME).exists()  # released


def test_failed_overwrite_leaves_the_old_run_and_says_so(tmp_path):
    """A new run that fails is removed; the old run is byte-identical and the error says it is unchanged."""
    out = fx.write_run(tmp_path / "run", checkpoints=False)
    before = tree(out)
    r = RunDirectory(out, overwrite=True)
    r.open()
    with pytest.raises(FloatingPointError, match=rf"diverged; the previous run in {out} is unchanged"):
        try:
            (r.path / "log.txt").write_text("partial")
            raise FloatingPointError("task 1: loss diverged")
        finally:
            r.close(False)
    assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["run"]


def test_killed_overwrite_leaves_the_old_run_and_the_next_start_cleans(tmp_path):
    """kill -9 during --overwrite: the old run is intact; the next start deletes the unfinished new run."""
    out = fx.write_run(tmp_path / "run", checkpoints=False)
    before = tree(out)
    p = holder(out, overwrite=True, then="os.kill(os.getpid(), 9)")
    p.wait()
    assert (tmp_path / f"run.new-{p.pid}").is_dir() and tree(out) == before
    r = RunDirectory(out, resume=True)
    r.open()
    r.close(True)
    assert sorted(os.listdir(tmp_path)) == ["run"] and tree(out) == before


def test_swap_interrupted_after_the_exchange_is_finished_on_next_start(tmp_path):
    """A swap that died after exchanging folders leaves DIR new and DIR.new-P old: the next start keeps
    DIR, carries the user's files over from the old run, and deletes the old run."""
    out = fx.write_run(tmp_path / "run", checkpoints=False)
    (out / STAGING_MARK).write_text("")
    old = tmp_path / "run.new-999999"
    fx.write_run(old, checkpoints=False)
    (old / "notes.md").write_text("mine")
    r = RunDirectory(out, resume=True)
    r.open()
    r.close(True)
    assert (out / "notes.md").read_text() == "mine" and not (out / STAGING_MARK).exists()
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_swap_interrupted_between_plain_renames_restores_the_old_run(tmp_path):
    """Without renameat2 the swap is two renames; dying between them leaves no DIR but DIR.old-P and an
    unfinished DIR.new-P: the next start puts the old run back and deletes the new one."""
    old = fx.write_run(tmp_path / "run.old-999999", checkpoints=False)
    before = tree(old)
    (tmp_path / "run.new-999999").mkdir()
    (tmp_path / "run.new-999999" / STAGING_MARK).write_text("")
    r = RunDirectory(tmp_path / "run", resume=True)
    r.open()
    r.close(True)
    assert sorted(os.listdir(tmp_path)) == ["run"] and tree(tmp_path / "run") == before


def test_overwrite_of_the_current_directory_is_refused(tmp_path, monkeypatch):
    """`--out .` with --overwrite cannot swap the folder the process stands in: refused up front."""
    out = fx.write_run(tmp_path / "run", checkpoints=False)
    monkeypatch.chdir(out)
    with pytest.raises(ConfigError, match="holds the current directory"):
        RunDirectory(".", overwrite=True).open()
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_overwrite_and_resume_together_are_refused(tmp_path):
    """--overwrite and --resume contradict each other: refused before anything is touched."""
    with pytest.raises(ConfigError, match="exclude each other"):
        RunDirectory(tmp_path / "run", overwrite=True, resume=True).check()
    with pytest.raises(ConfigError, match="empty string"):
        RunDirectory("")


def _save_two(out: Path):
    model = fx.build(fx.model_spec())
    r = RunDirectory(out)
    r.open()
    r.save_checkpoint(0, model, {}, fx.progress(0))
    return r, model


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC half-way through a checkpoint: one-line EnvironmentFault (exit 1), task-0 intact and loadable, no temp."""
    r, model = _save_two(tmp_path / "run")
    before = (r.checkpoints / "task-0.safetensors").read_bytes()

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(EnvironmentFault, match=r"task-1.safetensors: checkpoint not written \(No space left"):
        r.save_checkpoint(1, model, {}, fx.progress(1))
    monkeypatch.undo()
    with pytest.raises(EnvironmentFault, match="the previous file there is unchanged"):
        monkeypatch.setattr(ckpt, "save_file", full)
        r.save_checkpoint(0, model, {}, fx.progress(0))
    assert os.listdir(r.checkpoints) == ["task-0.safetensors"]
    assert (r.checkpoints / "task-0.safetensors").read_bytes() == before
    index, _, tensors, meta = r.latest()
    assert index == 0 and meta["bitcl_progress"]["task"] == 0
    r.close(True)


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    """On a full tmpfs (root only), the next checkpoint fails cleanly and the previous one still loads."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        r, model = _save_two(mount / "run")
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill what is left
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
        finally:
            os.close(fd)
        with pytest.raises(EnvironmentFault, match=r"checkpoint not written \(No space left on device\)"):
            r.save_checkpoint(1, model, {}, fx.progress(1))
        assert sorted(os.listdir(r.checkpoints)) == ["task-0.safetensors"]
        assert r.latest()[0] == 0
        r.close(True)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("target, message", [
    ("run/checkpoints/task-0.safetensors", "inside the checkpoints of the run"),
    ("run/checkpoints/model.safetensors", "inside the checkpoints of the run"),
    ("run/results.json", "would replace results.json of the run"),
    ("run/log.txt", "would replace log.txt"),
    ("run", "is a directory holding a run"),
    ("run.new-1/x.md", "a run being built"),
])
def test_writers_are_refused_inside_a_run(tmp_path, target, message):
    """export, pretrain and report refuse paths that would damage a run (refuse_run_file)."""
    fx.write_run(tmp_path / "run", tasks=1)
    (tmp_path / "run.new-1").mkdir()
    (tmp_path / "run.new-1" / STAGING_MARK).write_text("")
    with pytest.raises(ConfigError, match=message):
        refuse_run_file(tmp_path / target, "--out")
    with pytest.raises(ConfigError, match="is inside the run"):  # any new file inside a run is refused too
        refuse_run_file(tmp_path / "run" / "report.md", "--out")
    refuse_run_file(tmp_path / "run-report.md", "--out")  # beside the run is fine
    refuse_run_file(tmp_path / "elsewhere" / "results.json", "--out")


def test_latest_refuses_a_checkpoint_named_for_another_task(tmp_path):
    """A checkpoint file renamed to another task number is refused, not resumed from the wrong place."""
    out = tmp_path / "run"
    fx.write_checkpoint(out / "checkpoints" / "task-0.safetensors", 0)
    os.rename(out / "checkpoints" / "task-0.safetensors", out / "checkpoints" / "task-1.safetensors")
    with pytest.raises(CheckpointError, match="records task 0 but the file is named for task 1"):
        RunDirectory(out, resume=True).latest()


@pytest.mark.slow  # three CLI processes, one killed
def test_two_concurrent_cli_runs_and_a_killed_one(tmp_path, small_npz):
    """Real CLI processes: a second `bitcl run --overwrite` on a live run's folder exits 2 naming the owner
    and leaves the folder alone; after kill -9 of the owner its lock is free again."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "bitcl", "run", "--method", "finetune", "--data", small_npz, "--tasks", "2",
            "--hidden", "8", "--quiet", "--out", str(out)]
    first = subprocess.Popen(args + ["--epochs", "400"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            try:
                if json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        second = subprocess.run(args + ["--epochs", "1", "--overwrite"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"in use by another bitcl run (pid {first.pid} " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert sorted(os.listdir(tmp_path)) == ["run"]  # no staging folder was made
    finally:
        first.kill()
        first.wait()
    r = RunDirectory(out, overwrite=True)
    r.open()  # the killed run's lock is recognised as stale
    r.close(False)
