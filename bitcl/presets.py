"""Per-benchmark presets: settings chosen on validation data, applied to what the user leaves unset.

Each preset was chosen by a committed search that evaluates on a validation split carved
from the training data (``--validation``), never on the test split; its entry names the
script and the result file that hold the search. ``bitcl list`` prints them and every
run records the resolved values in results.json.
"""
from __future__ import annotations

# (benchmark, method, scenario) -> settings; "*" matches any method
PRESETS: dict[tuple[str, str, str], dict] = {
    # 10 tasks x 3 epochs: the protocol the search ran at (BLIP's authors: 5 epochs of SGD)
    ("permuted-mnist", "blip", "task"): {
        "epochs": 3, "lr": 6e-3, "batch_size": 32, "method_options": {"fisher_prior": 1e-7},
        "source": "benchmarks/search_presets.py -> benchmarks/results/search_permuted_blip.json"},
}


def resolve_preset(benchmark: str, method: str, scenario: str) -> dict:
    """The preset for this run, or {} (``source`` describes where it came from)."""
    return dict(PRESETS.get((benchmark, method, scenario)) or PRESETS.get((benchmark, "*", scenario)) or {})


def describe_presets() -> list[str]:
    lines = []
    for (benchmark, method, scenario), values in sorted(PRESETS.items()):
        shown = {k: v for k, v in values.items() if k != "source"}
        lines.append(f"{benchmark} / {method} / {scenario}: {shown} (chosen by {values.get('source', '?')})")
    return lines
