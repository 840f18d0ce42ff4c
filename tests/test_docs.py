"""The documentation holds: the site builds with no warning, every snippet of README.md and
docs/**/*.md runs and prints what the text quotes (tests/snippets.py), and no tracked file
leans on files outside the repository."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import figures
from tests.forkserver import ForkServer, write_shims
from tests.snippets import blocks, output_mismatch

ROOT = figures.ROOT
PAGES = figures.pages()
# Built from pieces so that this file does not match itself.
OUTSIDE_REFERENCES = ("../" + "shared", "DESIGN" + ".md")
MAX_NO_RUN = 6  # make demo, make test, make figures and very few others (docs/contributing.md)


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        return [ROOT / name for name in out.stdout.decode().split("\0") if name]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: every file but build output
        skip = {".git", ".venv", "site", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache", "runs"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_tracked_file_refers_to_files_outside_the_repository():
    """Contracts and docs live in the repo (docs/contracts/, docs/cli.md): no tracked file may cite
    the old design notes or the folder beside the checkout."""
    offenders = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{_page_id(path)}: {needle}" for needle in OUTSIDE_REFERENCES if needle in text]
    assert not offenders, "files referring outside the repository:\n" + "\n".join(offenders)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(config)], cwd=config.parent, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_mkdocs_strict_build(tmp_path):
    """`mkdocs build --strict` (what `make docs` runs) succeeds: no broken link, no missing page,
    no API reference that fails to render."""
    out = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.slow
def test_mkdocs_strict_build_fails_on_a_broken_link(tmp_path):
    """The strict build is not vacuous: a link to a page that does not exist fails it."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\nSee [a page that is not there](no-such-page.md).\n")
    out = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert out.returncode != 0 and "no-such-page.md" in out.stdout + out.stderr


def test_pages_have_few_no_run_blocks_each_with_a_reason():
    """Exemptions from the snippet test stay the few named ones."""
    exempt = [b for page in PAGES for b in blocks(page.read_text(), _page_id(page)) if b.no_run]
    assert len(exempt) <= MAX_NO_RUN, [str(b) for b in exempt]


def test_snippet_rules_catch_a_wrong_quoted_output():
    """The output check is not vacuous: a changed digit or a missing line fails, '...' skips."""
    page = textwrap.dedent("""\
        ```bash
        echo hi
        ```
        <!-- output -->
        ```text
        ACC 0.8980
        ```
        """)
    (block, quoted) = blocks(page)
    assert block.runs and block.expect == ["ACC 0.8980"] and quoted.is_output and not quoted.runs
    printed = "task 1\nACC 0.8980  BWT +0.0000\nresults: r.json\n"
    assert output_mismatch(["ACC 0.8980  BWT +0.0000"], printed) is None
    assert output_mismatch(["ACC 0.898  BWT +0.000"], printed) is None  # printed precision of the text
    assert output_mismatch(["ACC 0.8981  BWT +0.0000"], printed)
    assert output_mismatch(["task 1", "results: r.json"], printed)  # not consecutive
    assert output_mismatch(["task 1", "...", "results: r.json"], printed) is None
    with pytest.raises(ValueError, match="must follow a runnable block"):
        blocks("<!-- output -->\n```text\nx\n```\n")


RUNNABLE_PAGES = [p for p in PAGES if any(b.runs for b in blocks(p.read_text(), _page_id(p)))]


@pytest.fixture(scope="module")
def snippet_shell(tmp_path_factory):
    """(bin folder, environment) in which snippets run: ``bitcl`` and ``python`` as a user of an installed
    bitcl has them, served by one fork server (tests/forkserver.py: torch imported once, not once per
    command), and ``torchrun``; offline, one thread, the Agg backend."""
    bin_dir = tmp_path_factory.mktemp("snippet-bin")
    write_shims(bin_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    env.pop("BITCL_KERNELS", None)
    with ForkServer(env) as server:
        yield bin_dir, server.env


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_page_id)
def test_every_snippet_runs_and_prints_what_the_text_quotes(page, tmp_path, snippet_shell):
    """Each ```python / ```bash block of the page runs (in order, in one fresh folder, offline) and
    exits 0; a quoted output (<!-- output -->) matches what it printed."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("data", "examples", "tests"):
        (work / name).symlink_to(ROOT / name)
    bin_dir, env = snippet_shell
    for block in blocks(page.read_text(), _page_id(page)):
        if not block.runs:
            continue
        if block.lang.startswith("python"):
            cmd = [str(bin_dir / "python"), "-c", block.code]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", block.code]
        out = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=600)
        printed = out.stdout  # stdout and stderr interleaved as a terminal shows them
        assert out.returncode == 0, f"{block} exited {out.returncode}:\n{block.code}\n{printed[-3000:]}"
        if block.expect is not None:
            why = output_mismatch(block.expect, printed)
            assert why is None, f"{block}: {why}\n--- printed:\n{printed[-3000:]}"
    shutil.rmtree(work, ignore_errors=True)
