"""The run directory: results.json, accuracy_matrix.csv, log.txt and checkpoints/, owned by one run.

Layout and checkpoint format: docs/contracts/results.md and docs/contracts/checkpoint.md. Only the main rank writes.

* **One owner.** ``DIR/.bitcl.lock`` is held with ``flock`` for the whole run, so a second
  run on the same folder is refused while the first lives, and the lock of a process that
  died (even by ``kill -9``) is free again at once: the kernel drops it with the process.
  The file also names the owner's pid and host, for the message.
* **--overwrite never loses the old run.** The new run is built beside it, in
  ``DIR.new-<pid>/``, and only when it has completed are the two folders swapped (one atomic
  ``renameat2(RENAME_EXCHANGE)`` on Linux); the old run is then deleted, keeping any
  files of the user's that are not run files. If the new run fails or is killed, ``DIR`` is
  untouched and the error says so.
* **Leftovers are cleaned on the next start**: temporary files of interrupted atomic writes
  and the ``DIR.new-*`` / ``DIR.old-*`` folders of processes that are gone (the new owner
  holds the lock, so nobody else can be using them).
* **A full disk** while writing a checkpoint leaves the previous checkpoint intact and
  loadable and stops with one line.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from bitcl.errors import CheckpointError, ConfigError

LOCK_NAME = ".bitcl.lock"
STAGING_MARK = ".bitcl-staging"  # present in a DIR.new-<pid> folder until it has become DIR
RUN_FILES = ("results.json", "accuracy_matrix.csv", "return_matrix.csv", "log.txt")
DERIVED = ("bits.json", "bits.png", "importance.json", "report")  # analyses of a run: they go with it
RUN_ENTRIES = RUN_FILES + DERIVED + ("checkpoints", LOCK_NAME, STAGING_MARK)
_TEMP = re.compile(r"^\.(results\.json|accuracy_matrix\.csv|return_matrix\.csv|bits\.json|"
                   r"task-\d+\.safetensors)\..+$")


def holds_run(folder: Path) -> bool:
    """A folder that holds (part of) a bitcl run: results.json or checkpoints/."""
    return folder.is_dir() and any((folder / name).exists() for name in ("results.json", "checkpoints"))


def _sibling(target: Path, kind: str, pid: int) -> Path:
    target = target.resolve()  # `--out .` or `--out run/`: name the sibling after the real folder
    return target.parent / f"{target.name}.{kind}-{pid}"


def _siblings(target: Path, kind: str) -> list[Path]:
    target = target.resolve()
    pattern = re.compile(rf"^{re.escape(target.name)}\.{kind}-(\d+)$")
    try:
        return [target.parent / n for n in os.listdir(target.parent) if pattern.match(n)]
    except OSError:
        return []


def refuse_run_file(path: str | os.PathLike, what: str) -> None:
    """ConfigError when writing ``path`` would damage a run: a file inside a run's checkpoints/
    folder or a run's staging folder, one of a run's own files, or a run directory itself.

    ``bitcl export``, ``bitcl pretrain`` and ``bitcl report --out`` call it before writing.
    """
    path = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{what}: must name a file, got an empty string")
    resolved = path.resolve()
    if resolved.is_dir():
        raise ConfigError(f"{what} {path}: is a directory{' holding a run' if holds_run(resolved) else ''}; "
                          "name a file")
    for folder in resolved.parents:
        if folder.name == "checkpoints" and (holds_run(folder.parent) or (folder.parent / LOCK_NAME).exists()):
            raise ConfigError(f"{what} {path}: is inside the checkpoints of the run in {folder.parent}; "
                              "write it elsewhere")
        if (folder / STAGING_MARK).exists():
            raise ConfigError(f"{what} {path}: is inside {folder}, a run being built; write it elsewhere")
    parent = resolved.parent
    if resolved.name in RUN_ENTRIES and (holds_run(parent) or (parent / LOCK_NAME).exists()):
        raise ConfigError(f"{what} {path}: would replace {resolved.name} of the run in {parent}; "
                          "write it elsewhere")
    refuse_inside_run(resolved.parent, what, path)


def refuse_inside_run(folder: str | os.PathLike, what: str, shown: object = None) -> None:
    """ConfigError when ``folder`` is a run directory or lies inside one (a folder holding
    results.json or checkpoints/, or locked by a live run): nothing but the run writes there."""
    resolved = Path(folder).resolve()
    for candidate in (resolved, *resolved.parents):
        if holds_run(candidate) or (candidate / LOCK_NAME).exists():
            raise ConfigError(f"{what} {shown if shown is not None else folder}: is inside the run in {candidate}; "
                              "write it elsewhere")


# -- the lock ----------------------------------------------------------------------------------
class _Lock:
    """An flock on ``folder/.bitcl.lock``; released by close() or by the death of the process."""

    def __init__(self, folder: Path, label: str):
        self.path = folder / LOCK_NAME
        self.fd = self._acquire(label)

    def _acquire(self, label: str) -> int:
        for _ in range(20):  # retried only when another process unlinked the file between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(self.path)
                os.close(fd)
                raise ConfigError(f"{label} {self.path.parent}: in use by another bitcl run{owner}; "
                                  "wait for it or choose another --out") from None
            try:  # the file we locked must still be the one at the path (the owner unlinks it on close)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
            return fd
        raise ConfigError(f"{label} {self.path.parent}: could not take the run lock")

    def release(self, unlink: bool = True) -> None:
        if self.fd < 0:
            return
        if unlink:
            try:
                if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                    self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def _owner(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f" (pid {int(info['pid'])} on {info['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _amend(error: Optional[BaseException], note: str) -> None:
    """Append ``note`` to the one line the CLI will print for ``error``."""
    if error is None:
        return
    if isinstance(error, OSError) and error.strerror:
        error.strerror = f"{error.strerror}; {note}"
    elif len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]}; {note}",)
    else:
        error.add_note(note)


class RunDirectory:
    """One run's folder (``out=None``: nothing is written).

    :attr:`path` is where the run's files are being written: ``out`` itself, or with
    ``--overwrite`` of an existing run the staging folder ``out.new-<pid>`` until
    :meth:`close` has swapped it in. :attr:`target` is always ``out``.
    """

    def __init__(self, out: Optional[str | os.PathLike], overwrite: bool = False, resume: bool = False,
                 is_main: bool = True):
        if out is not None and str(out).strip() == "":
            raise ConfigError("--out must name a directory, got an empty string")
        self.target = Path(out) if out is not None else None
        self.path = self.target
        self.overwrite, self.resume, self.is_main = overwrite, resume, is_main
        self._locks: list[_Lock] = []
        self._staging: Optional[Path] = None

    @property
    def checkpoints(self) -> Optional[Path]:
        return self.path / "checkpoints" if self.path else None

    # -- opening ------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a folder that is a file, or that holds a run we were not told to replace or resume."""
        if self.target is None:
            if self.resume:
                raise ConfigError("--resume needs --out: the folder of the run to continue")
            return
        if self.overwrite and self.resume:
            raise ConfigError("--overwrite and --resume exclude each other: replace the run or continue it")
        if self.target.exists() and not self.target.is_dir():
            raise ConfigError(f"--out {self.target}: exists and is not a directory")
        # a typo must not start a whole fresh run (an interrupted --overwrite swap, DIR.old-<pid>, is restored by
        # open). Under torchrun's elastic agent (--max-restarts), `--resume` on the first launch is the documented
        # way for a restarted job to continue, so there a missing folder starts the run.
        elastic = os.environ.get("TORCHELASTIC_RESTART_COUNT") is not None
        if self.resume and not self.target.exists() and not _siblings(self.target, "old") and not elastic:
            raise ConfigError(f"--resume: {self.target} does not exist; there is no run to continue "
                              "(check the folder name, or drop --resume to start a new run)")
        for folder in self.target.resolve().parents:
            if folder.name == "checkpoints" and holds_run(folder.parent):
                raise ConfigError(f"--out {self.target}: is inside the checkpoints of the run in {folder.parent}")
        if self.overwrite and holds_run(self.target) and self.target.resolve() in (Path.cwd(), *Path.cwd().parents):
            raise ConfigError(f"--out {self.target}: --overwrite replaces the folder, which holds the current "
                              "directory; run from outside it")
        if holds_run(self.target) and not (self.resume or self.overwrite):
            raise ConfigError(f"--out {self.target}: already holds a run (use --overwrite to replace it "
                              "or --resume to continue it)")

    def open(self) -> None:
        """Check, take the lock, clean what interrupted runs left, and (``--overwrite`` of an
        existing run) start the new run in a staging folder beside the old one."""
        self.check()
        if self.target is None or not self.is_main:
            return
        self._restore_interrupted_swap()
        self.target.mkdir(parents=True, exist_ok=True)
        self._locks.append(_Lock(self.target, "--out"))
        try:
            self._clean_leftovers()
            if self.overwrite and holds_run(self.target):
                self._staging = _sibling(self.target, "new", os.getpid())
                self._staging.mkdir()
                (self._staging / STAGING_MARK).write_text(f"new run for {self.target}, pid {os.getpid()}\n")
                self._locks.append(_Lock(self._staging, "--out"))
                self.path = self._staging
        except BaseException:
            self._release()
            raise

    def _restore_interrupted_swap(self) -> None:
        """A swap that died between its two plain renames left no DIR but DIR.old-<pid>: put it back."""
        if self.target.exists():
            return
        for old in _siblings(self.target, "old"):
            try:
                os.rename(old, self.target)
                return
            except OSError:
                continue  # another starter restored it first

    def _clean_leftovers(self) -> None:
        """Called holding the lock: nothing else can be writing here, so every leftover is stale."""
        for folder in (self.target, self.target / "checkpoints"):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if _TEMP.match(name):
                    (folder / name).unlink(missing_ok=True)
        (self.target / STAGING_MARK).unlink(missing_ok=True)  # swapped in, then interrupted
        for staging in _siblings(self.target, "new"):
            if (staging / STAGING_MARK).exists():
                shutil.rmtree(staging, ignore_errors=True)  # an unfinished new run
            else:
                self._finish_old(staging)  # exchanged, not yet renamed: this is an old run
        for old in _siblings(self.target, "old"):
            self._finish_old(old)

    def _finish_old(self, old: Path) -> None:
        """Keep the user's own files of a replaced run, delete the rest."""
        for entry in os.listdir(old):
            if entry not in RUN_ENTRIES and not (self.target / entry).exists():
                os.rename(old / entry, self.target / entry)
        shutil.rmtree(old, ignore_errors=True)

    # -- closing ------------------------------------------------------------------------
    def close(self, success: Optional[bool] = None, error: Optional[BaseException] = None) -> None:
        """Release the folder. With ``--overwrite``: on success swap the new run in (the old one
        is deleted); on failure delete the unfinished new run and leave the old one as it was,
        appending that fact to the error being raised (``error``, else the one in flight).

        ``success=None`` (e.g. ``close()`` in a ``finally``) means: no exception is in flight."""
        if error is None:
            error = sys.exc_info()[1]
        if success is None:
            success = error is None
        if self._staging is None:
            self._release()
            return
        staging, self._staging = self._staging, None
        try:
            if success:
                self._swap_in(staging)
            else:
                shutil.rmtree(staging, ignore_errors=True)
                _amend(error, f"the previous run in {self.target} is unchanged (--overwrite replaces it "
                              "only when the new run completes)")
        finally:
            self._release()

    def _swap_in(self, staging: Path) -> None:
        old = _sibling(self.target, "old", os.getpid())
        try:
            if _exchange(staging, self.target):
                os.rename(staging, old)
            else:
                os.rename(self.target, old)
                os.rename(staging, self.target)
        except OSError as error:
            raise ConfigError(f"--overwrite: the new run is complete in {staging} but could not replace "
                              f"{self.target} ({error.strerror}); the previous run there is unchanged") from None
        self.path = self.target
        self._locks[-1].path = self.target / LOCK_NAME  # the staging folder's lock now lies in DIR
        (self.target / STAGING_MARK).unlink(missing_ok=True)
        self._finish_old(old)

    def _release(self) -> None:
        while self._locks:
            self._locks.pop().release()

    # -- writing ------------------------------------------------------------------------
    def log(self, line: str, quiet: bool = False) -> None:
        if not self.is_main:
            return
        if not quiet:
            print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with open(self.path / "log.txt", "a") as f:
                f.write(line + "\n")

    def save_checkpoint(self, index: int, model, strategy_state: dict, progress: dict) -> None:
        """Write ``task-<index>.safetensors`` atomically; on failure the previous checkpoint is intact."""
        if self.checkpoints is None or not self.is_main:
            return
        from bitcl import checkpoint as ckpt  # here, so that the lock and the refusals need no torch
        ckpt.save_checkpoint(self.checkpoints / f"task-{index}.safetensors", model, strategy_state, progress)

    def latest(self):
        """``(task_index, path, tensors, metadata)`` of the newest checkpoint, validated; or None."""
        if self.checkpoints is None:
            return None
        from bitcl import checkpoint as ckpt
        found = ckpt.latest_checkpoint(self.checkpoints)
        if found is None:
            return None
        index, path = found
        tensors, meta = ckpt.read_checkpoint(path, task=index)
        return index, path, tensors, meta

    def write_results(self, result) -> None:
        """results.json (``result.to_json()``) and the matrix as CSV (``result.matrix_csv()``:
        accuracy_matrix.csv, or return_matrix.csv for ``bitcl rl``), each atomically."""
        if self.path is None or not self.is_main:
            return
        from bitcl import checkpoint as ckpt
        for name, text in (("results.json", json.dumps(result.to_json(), indent=2)), result.matrix_csv()):
            try:
                ckpt.atomic_write_text(self.path / name, text)
            except OSError as error:
                raise CheckpointError(f"{self.path / name}: could not be written ({error.strerror or error})") \
                    from None


__all__ = ["LOCK_NAME", "RUN_FILES", "RunDirectory", "holds_run", "refuse_run_file"]
