"""Which head a packed file can run (numpy only, shared by ``load_packed`` and ``NumpyRuntime``).

A task-incremental export keeps the exported task's head only (``bitcl export --task T``); the
model rebuilt from it has the other heads at their random initialisation, so running them is
refused with the heads the file does hold, never answered.
"""
from __future__ import annotations

from typing import Iterable, Optional

from bitcl.errors import DataError


def stored_heads(meta: dict, names: Iterable[str]) -> list[int]:
    """The tasks whose head a packed file stores (task-incremental models; others have one head, 0)."""
    return sorted(int(k.split(".")[1]) for k in names
                  if k.startswith("heads.") and k.endswith(".weight") and k.split(".")[1].isdigit())


def head_to_run(meta: dict, present: list[int], task: Optional[int]) -> int:
    """The head index for ``task`` (None: the exported task), or DataError naming the heads present:
    a head the file does not store would run at its random initialisation."""
    if meta["model"]["setting"] != "task":
        return 0  # one shared (or growing) head for every task
    task = meta["task"] if task is None else task
    if task is None:
        raise DataError(f"this file holds the heads of tasks {present}: pass task=T")
    if not present:
        raise DataError("this file holds no task head to run")
    if isinstance(task, bool) or not isinstance(task, int) or task not in present:
        raise DataError(f"task {task!r}: this file holds no head for it (heads present: tasks "
                        f"{', '.join(map(str, present))}); call with task={present[0]}, or export that task's head "
                        f"with bitcl export --task {task}")
    return task


__all__ = ["head_to_run", "stored_heads"]
