"""Every figure and plot in README.md and docs/ is tied to its own source (tests/figures.py), and
the committed results it may cite were made from committed code."""
import json
import re

import pytest

from tests import figures
from tests.figures import check_text

ROOT = figures.ROOT


def test_every_figure_matches_its_own_source():
    """A decimal number in README.md or docs/**/*.md without a marker, or whose cited value does
    not print as it, fails (rules in docs/contributing.md)."""
    problems = figures.check_pages()
    assert not problems, "figures without a matching source:\n" + "\n".join(map(str, problems))


def test_the_pages_cite_results_at_all():
    """The checker is not vacuous on the real pages: README.md quotes marked measurements."""
    readme = ROOT / "README.md"
    assert figures.cited_sources([readme]), "README.md cites no result file"


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.name)
def test_committed_results_were_made_from_committed_code(path):
    """A result whose recorded git commit is marked '+uncommitted' (or missing) cannot be
    reproduced from the repository: regenerate it on a clean tree (make figures)."""
    why = figures.commit_problem(json.loads(path.read_text()))
    assert why is None, f"{path.name}: {why}; commit, then re-run its benchmark on the clean tree (make figures)"


def test_commit_check_refuses_uncommitted_and_missing_commits():
    """The commit check is not vacuous: '+uncommitted', a missing or a malformed commit fail."""
    clean = "0123456789abcdef0123456789abcdef01234567"
    assert figures.commit_problem({"environment": {"git_commit": clean}}) is None
    assert "uncommitted" in figures.commit_problem({"environment": {"git_commit": clean + "+uncommitted"}})
    assert figures.commit_problem({"environment": {"git_commit": "unknown"}})
    assert figures.commit_problem({"environment": {}})
    assert figures.commit_problem({})


# -- the checker fails on each kind of bad figure ------------------------------------------------

@pytest.fixture
def result(tmp_path, monkeypatch):
    """A result file in a temporary benchmarks/results/ that the checker reads instead."""
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "acc.png").write_bytes(b"\x89PNG")
    data = {"runs": [{"acc": 0.98304, "bwt": -0.0013}], "ratio": 1.1090888, "share": 0.0408,
            "plots": ["docs/acc.png"]}
    (tmp_path / "r.json").write_text(json.dumps(data))
    return data


GOOD = ("ACC 0.9830<!-- fig: r.json runs.0.acc --> and BWT −0.0013<!-- fig: r.json runs.0.bwt -->, "
        "1.11x<!-- fig: r.json ratio --> the CLI, 4.1 %<!-- fig: r.json share pct --> of a game, "
        "target 0.95<!-- set -->, the paper's 0.97<!-- paper: Shi 2021, Table 1 -->. "
        "Version 0.2.0, arXiv 2105.04444, Sec. 5.3, `0.123` in code.\n\n```text\n0.5 in a block\n```\n"
        "![accuracy](docs/acc.png)<!-- fig: r.json -->\n")


def test_checker_accepts_well_marked_figures(result):
    """The reference page passes: marked figures, versions, arXiv ids, code and a listed plot."""
    assert check_text(GOOD, "README.md") == []


def test_checker_fails_on_a_figure_without_a_marker(result):
    """A bare number (here 0.9830 with its marker removed) fails."""
    problems = check_text(GOOD.replace("0.9830<!-- fig: r.json runs.0.acc -->", "0.9830"), "README.md")
    assert [p.text for p in problems] == ["0.9830"] and "no marker" in problems[0].why


def test_checker_fails_when_one_digit_of_the_text_changes(result):
    """0.9830 -> 0.9831 in the text fails; so does a dropped sign."""
    assert [p.text for p in check_text(GOOD.replace("0.9830", "0.9831"), "README.md")] == ["0.9831"]
    assert [p.text for p in check_text(GOOD.replace("−0.0013", "0.0013"), "README.md")] == ["0.0013"]


def test_checker_fails_when_the_cited_value_changes(result, tmp_path):
    """The same text fails once the JSON value it cites changes in one digit."""
    result["runs"][0]["acc"] = 0.98404
    (tmp_path / "r.json").write_text(json.dumps(result))
    problems = check_text(GOOD, "README.md")
    assert [p.text for p in problems] == ["0.9830"] and "0.9840" in problems[0].why


def test_checker_fails_on_a_missing_file_or_path(result):
    """A marker naming a file or a JSON path that does not exist fails, naming it."""
    missing_file = check_text("ACC 0.9830<!-- fig: nope.json runs.0.acc -->", "README.md")
    missing_path = check_text("ACC 0.9830<!-- fig: r.json runs.1.acc -->", "README.md")
    not_number = check_text("ACC 0.9830<!-- fig: r.json runs.0 -->", "README.md")
    assert "nope.json" in missing_file[0].why
    assert "'1'" in missing_path[0].why
    assert "not a finite number" in not_number[0].why


def test_checker_fails_on_an_unlisted_or_unmarked_plot(result, tmp_path):
    """A plot the result file does not list under 'plots', or one without a marker, fails."""
    (tmp_path / "docs" / "other.png").write_bytes(b"\x89PNG")
    unlisted = check_text("![x](docs/other.png)<!-- fig: r.json -->", "README.md")
    unmarked = check_text("![x](docs/acc.png)", "README.md")
    relative = check_text("![x](acc.png)<!-- fig: r.json -->", "docs/results.md")
    assert "does not list docs/other.png" in unlisted[0].why
    assert "needs <!-- fig" in unmarked[0].why
    assert relative == []


def test_checker_fails_on_a_paper_number_the_text_does_not_attribute(result):
    """A paper marker on a line that does not say it is the paper's number fails."""
    problems = check_text("BLIP reaches 0.97<!-- paper: Shi 2021, Table 1 -->.", "README.md")
    assert problems and "paper" in problems[0].why


def _first_readme_figure():
    """The README's text, and the first measured figure in it: (printed number, FILE, PATH, start)."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"([-−]?\d+\.\d+)x?<!-- fig: (\S+) (\S+) -->", text)
    assert m, "README.md has no measured figure"
    return text, m


def test_changing_one_digit_of_a_real_readme_figure_fails():
    """On the real README: the last digit of its first measured figure changed -> exactly that
    figure fails."""
    text, m = _first_readme_figure()
    printed = m.group(1)
    changed = printed[:-1] + str((int(printed[-1]) + 1) % 10)
    edited = text[:m.start(1)] + changed + text[m.end(1):]
    assert check_text(text, "README.md") == []
    problems = check_text(edited, "README.md")
    assert [p.text for p in problems] == [changed]


def test_changing_the_value_a_real_readme_figure_cites_fails(tmp_path, monkeypatch):
    """On the real README: the JSON value its first figure cites, moved by one unit of the printed
    precision in a copy of the result files -> that figure fails."""
    text, m = _first_readme_figure()
    printed, name, path = m.group(1), m.group(2), m.group(3)
    for source in (ROOT / "benchmarks" / "results").glob("*.json"):
        (tmp_path / source.name).write_text(source.read_text())
    data = json.loads((tmp_path / name).read_text())
    *parents, last = path.split(".")
    node = figures.lookup(data, ".".join(parents)) if parents else data
    key = int(last) if isinstance(node, list) else last
    node[key] += 10 ** -len(printed.split(".")[1])
    (tmp_path / name).write_text(json.dumps(data))
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    problems = check_text(text, "README.md")
    assert problems and all(p.text.replace("−", "-") == printed.replace("−", "-") for p in problems), problems


GIT_SHOW = re.compile(r"git show ([0-9a-f]{7,40}):([\w./-]+)")


def missing_git_objects(text: str, root) -> list[str]:
    """The ``git show REV:PATH`` a page tells readers to run that the repository cannot answer (a
    before-file named by a commit that never held it). Needs the full history, as a plain
    ``git clone`` has (a ``--depth 1`` clone would report every one)."""
    import subprocess

    return [f"{rev}:{path}" for rev, path in GIT_SHOW.findall(text)
            if subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{rev}:{path}"],
                              capture_output=True).returncode != 0]


def test_every_git_show_in_the_pages_names_a_file_that_commit_holds():
    pages = figures.pages()
    named = [m for page in pages for m in GIT_SHOW.findall(page.read_text())]
    assert named, "the pages name no before-file"
    assert [bad for page in pages for bad in missing_git_objects(page.read_text(), ROOT)] == []


def test_a_git_show_of_a_commit_that_never_held_the_file_is_named():
    # 11a11e5 made the old backbone table, but the file was committed later (664184e)
    text = "see `git show 11a11e5:benchmarks/results/backbones_accuracy.json` and `git show 664184e:benchmarks/results/backbones_accuracy.json`"
    assert missing_git_objects(text, ROOT) == ["11a11e5:benchmarks/results/backbones_accuracy.json"]
