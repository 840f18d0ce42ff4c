"""Every figure in README.md and docs/**/*.md is tied to one source (rules: docs/contributing.md).

A *figure* is every decimal number (``0.983``, ``-0.0013``, ``1.11x``, ``4.1 %``) in the prose
of a page: outside fenced code blocks, inline code spans, HTML comments and link targets.
Not figures: version strings of three or more parts (``0.2.0``), arXiv identifiers (a number
right after ``arXiv``) and section or equation numbers (right after ``Sec.``, ``Section``, ``Eq.``). Each figure must be followed at once (after an optional ``x``, ``×`` or
``%`` unit) by one marker:

* ``<!-- fig: FILE.json PATH -->``: a measurement; FILE lies in benchmarks/results/, PATH is
  dot-separated keys and list indices; the value there, rounded to the printed number of
  decimals, must equal the printed number (``pct``: the value x 100 is printed).
* ``<!-- set -->``: a setting, target or default, not a measurement.
* ``<!-- paper: AUTHOR YEAR, Table N -->``: a paper's number; the line must say "paper".

A plot ``![alt](PATH.png)<!-- fig: FILE.json -->`` must exist and be listed under the result
file's ``"plots"`` key (paths relative to the repository root).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

FENCE = re.compile(r"^([ \t]*)(```+|~~~+).*?^\1\2[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
COMMENT = re.compile(r"<!--(.*?)-->", re.S)
LINK_TARGET = re.compile(r"\]\([^)]*\)")
VERSION = re.compile(r"(?<![\w.])v?\d+(?:\.\d+){2,}(?![\w.])")
ARXIV = re.compile(r"arXiv[ :]+\d{4}\.\d{4,5}(?:v\d+)?|\b(?:Sec\.|Section|Eq\.|Equation)\s*\d+(?:\.\d+)+")
NUMBER = re.compile(r"(?<![\w.\d])([-+−]?\d+(?:,\d{3})*\.\d+)(?![\d.]*\d)")
UNIT = re.compile(r"(?:x|×|\s?%)?")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Problem:
    """One failed figure: where, what was printed, and why it fails."""
    page: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text!r}: {self.why}"


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    found = [root / "README.md"] if (root / "README.md").exists() else []
    return found + sorted((root / "docs").rglob("*.md"))


def _blank(text: str, pattern: re.Pattern) -> str:
    """Replace each match by spaces (newlines kept), so positions and line numbers survive."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def prose(text: str) -> str:
    """The page with code blocks and inline code blanked out (comments and links kept)."""
    return _blank(_blank(text, FENCE), INLINE_CODE)


def lookup(data: Any, path: str) -> Any:
    """The value at a dot-separated PATH of keys and list indices; KeyError naming the step."""
    node = data
    for step in path.split("."):
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.lstrip("-").isdigit() and -len(node) <= int(step) < len(node):
            node = node[int(step)]
        else:
            raise KeyError(f"no '{step}' in {path}")
    return node


def _load(name: str, cache: dict) -> Any:
    if name not in cache:
        path = RESULTS / name
        if Path(name).name != name or not path.is_file():
            raise FileNotFoundError(f"no result file benchmarks/results/{name}")
        cache[name] = json.loads(path.read_text())
    return cache[name]


def _check_measured(printed: str, args: list[str], cache: dict) -> str | None:
    """None if the cited value prints as ``printed``; else why not."""
    if len(args) not in (2, 3) or (len(args) == 3 and args[2] != "pct"):
        return "fig marker must be 'fig: FILE.json PATH [pct]'"
    try:
        value = lookup(_load(args[0], cache), args[1])
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        return str(exc).strip('"')
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{args[0]} {args[1]} is {value!r}, not a finite number"
    if len(args) == 3:
        value *= 100
    number = printed.replace("−", "-").replace(",", "")
    places = len(number.split(".")[1])
    if abs(value - float(number)) > 0.5 * 10 ** -places * (1 + 1e-9) + 1e-12:
        return f"{args[0]} {args[1]} holds {value!r}, which prints as {value:.{places}f}"
    return None


def check_text(text: str, page: str = "page.md", cache: dict | None = None) -> list[Problem]:
    """Every problem with the figures and plots of one page's Markdown text."""
    cache = {} if cache is None else cache
    problems: list[Problem] = []
    visible = prose(text)
    comments = {m.start(): m for m in COMMENT.finditer(visible)}
    scan = _blank(_blank(_blank(_blank(visible, COMMENT), LINK_TARGET), VERSION), ARXIV)

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for m in NUMBER.finditer(scan):
        printed, end = m.group(1), m.end()
        end = UNIT.match(visible, end).end()
        marker = comments.get(end)
        where = line_of(m.start())
        if marker is None:
            problems.append(Problem(page, where, printed, "no marker (fig/set/paper) right after it"))
            continue
        body = marker.group(1).strip()
        kind, _, rest = body.partition(":") if ":" in body else (body, "", "")
        kind = kind.strip()
        if kind == "set" and not rest.strip():
            continue
        if kind == "paper" and rest.strip():
            line = scan.splitlines()[where - 1]
            if "paper" not in line.lower():
                problems.append(Problem(page, where, printed, "a paper's number, but the line does not say 'paper'"))
            continue
        if kind == "fig":
            why = _check_measured(printed, rest.split(), cache)
            if why:
                problems.append(Problem(page, where, printed, why))
            continue
        problems.append(Problem(page, where, printed, f"unknown marker <!--{marker.group(1)}-->"))

    base = ROOT / Path(page).parent
    for m in IMAGE.finditer(visible):
        target = m.group(1)
        where = line_of(m.start())
        marker = comments.get(m.end())
        args = marker.group(1).split() if marker else []
        if len(args) != 2 or args[0] != "fig:":
            problems.append(Problem(page, where, target, "a plot needs <!-- fig: FILE.json --> right after it"))
            continue
        rel = (base / target).resolve()
        try:
            rel_name = rel.relative_to(ROOT).as_posix()
        except ValueError:
            rel_name = target
        if not rel.is_file():
            problems.append(Problem(page, where, target, "no such image file"))
            continue
        try:
            plots = _load(args[1], cache).get("plots", [])
        except (FileNotFoundError, json.JSONDecodeError, AttributeError) as exc:
            problems.append(Problem(page, where, target, str(exc)))
            continue
        if rel_name not in plots:
            problems.append(Problem(page, where, target, f"{args[1]} does not list {rel_name} under 'plots'"))
    return problems


def check_pages(paths: Iterable[Path] | None = None) -> list[Problem]:
    """Problems over README.md and docs/**/*.md (or the given pages)."""
    cache: dict = {}
    out: list[Problem] = []
    for path in pages() if paths is None else paths:
        out += check_text(path.read_text(), path.relative_to(ROOT).as_posix(), cache)
    return out


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def commit_problem(result: Any) -> str | None:
    """None when a result records the clean commit it was made from (``environment.git_commit``,
    40 hex digits); else why it cannot be reproduced from the repository."""
    env = result.get("environment") if isinstance(result, dict) else None
    commit = env.get("git_commit") if isinstance(env, dict) else None
    if isinstance(commit, str) and commit.endswith("+uncommitted"):
        return f"made from uncommitted changes ({commit})"
    if not (isinstance(commit, str) and COMMIT.match(commit)):
        return f"no recorded commit (environment.git_commit is {commit!r})"
    return None


def cited_sources(paths: Iterable[Path] | None = None) -> set[str]:
    """The result files the pages cite."""
    names = set()
    for path in pages() if paths is None else paths:
        for m in COMMENT.finditer(prose(path.read_text())):
            args = m.group(1).split()
            if args[:1] == ["fig:"] and len(args) >= 2:
                names.add(args[1])
    return names
