"""The code snippets of README.md and docs/**/*.md, and the outputs the text quotes (rules:
docs/contributing.md, "Snippets").

* A fenced block whose info string starts with ``python`` or ``bash`` is run: python in its own
  interpreter, bash with ``bitcl`` meaning ``python -m bitcl``. The blocks of one page run in
  order in one fresh folder (so a later block may read what an earlier one wrote), in which
  ``data``, ``examples`` and ``tests`` point to the repository's.
* ``<!-- no-run: REASON -->`` on the line before a fence exempts that block (a few commands
  that install or run for minutes: ``make demo``, ``make test``, ``make figures``).
* ``<!-- output -->`` on the line before a ``text`` block makes that block the expected output
  of the runnable block just before it: each expected line must appear in the output, in
  order; a line ``...`` stands for any lines; numbers are compared at the printed precision.
* Any other block (``text``, ``console``, ``json``, ``yaml``...) is not run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE_OPEN = re.compile(r"^([ \t]*)(```+|~~~+)[ \t]*([\w+-]*)(.*)$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(\S.*?)\s*-->\s*$")
OUTPUT = re.compile(r"^\s*<!--\s*output\s*-->\s*$")
RUNNABLE = ("python", "bash")
NUMBER = re.compile(r"^[-+−]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")


@dataclass
class Block:
    """One fenced block of a page."""
    page: str
    line: int
    lang: str
    code: str
    no_run: str | None = None
    expect: list[str] | None = None  # the quoted output, for runnable blocks
    is_output: bool = False

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and self.no_run is None

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang})"


def blocks(text: str, page: str = "page.md") -> list[Block]:
    """Every fenced block of a page, with its no-run reason and its quoted output attached."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}{re.escape(fence)}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        before = lines[start - 1] if start > 0 else ""
        block = Block(page, start + 1, lang, "\n".join(body) + "\n")
        if (n := NO_RUN.match(before)):
            block.no_run = n.group(1)
        if OUTPUT.match(before):
            block.is_output = True
            runnable = [b for b in out if b.runs]
            if not runnable or out[-1] is not runnable[-1]:
                raise ValueError(f"{page}:{start + 1}: <!-- output --> must follow a runnable block")
            runnable[-1].expect = body
        out.append(block)
    return out


def _same_token(expected: str, actual: str) -> bool:
    e, a = expected.replace("−", "-").rstrip(",;"), actual.replace("−", "-").rstrip(",;")
    if NUMBER.match(e) and NUMBER.match(a):
        places = len(e.split(".")[1]) if "." in e and "e" not in e.lower() else 0
        return abs(float(e) - float(a)) <= 0.5 * 10 ** -places * (1 + 1e-9) + 1e-12
    return expected == actual


def same_line(expected: str, actual: str) -> bool:
    """Equal word by word, numbers equal at the expected line's printed precision."""
    e, a = expected.split(), actual.split()
    return len(e) == len(a) and all(_same_token(x, y) for x, y in zip(e, a))


def output_mismatch(expected: list[str], actual: str) -> str | None:
    """None if the quoted lines appear in order in ``actual`` (``...`` skips any lines,
    otherwise the quoted lines must be consecutive); else the first line not found."""
    got = [line for line in actual.splitlines() if line.strip()]
    want = [line for line in expected if line.strip()]
    pos = 0
    gap = True  # may the next expected line skip output lines? (before the first: yes)
    for line in want:
        if line.strip() == "...":
            gap = True
            continue
        while pos < len(got) and not same_line(line, got[pos]):
            if not gap:
                return f"expected {line!r}, got {got[pos]!r}"
            pos += 1
        if pos == len(got):
            return f"quoted line not in the output: {line!r}"
        pos += 1
        gap = False
    return None

