"""Statistics over repeated runs: mean, spread, 95 % intervals and significance.

Every figure bitcl prints over several seeds (``bitcl report``, ``bitcl sweep``, RL evaluation
episodes) goes through this module, so one definition holds everywhere:

* the interval is Student's t interval for the mean, ``mean ± t_{0.975, n-1} · s / sqrt(n)``,
  with ``s`` the sample standard deviation (``ddof = 1``); with one value there is no interval;
* two groups differ significantly when Welch's unequal-variance t-test gives ``p < 0.05``
  (two-sided); with fewer than two values in a group no test is made and nothing is called
  significant.

The t quantile and the Welch p-value come from :mod:`scipy.stats` (scipy is a dependency of
``mlxtend``, which bitcl already needs).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

LEVEL = 0.95  # the confidence level of every interval bitcl prints
ALPHA = 0.05  # the significance level of every comparison bitcl prints
INTERVAL_KIND = "t"  # Student's t interval for the mean (not a bootstrap)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95 % t interval of ``n`` values.

    ``std``, ``low`` and ``high`` are ``None`` when ``n < 2`` (no spread can be estimated),
    never a made-up zero.
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None
    interval: str = INTERVAL_KIND

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self, digits: int = 4) -> str:
        """``0.9830 ± 0.0021 (n=3)``: the mean and the half width of the 95 % interval."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f} (n={self.n})"


def _finite(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values to summarise")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite value {bad[0]!r}")
    return out


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return float(stats.t.ppf(0.5 + level / 2, df))


def summarize(values: Iterable[float], what: str = "values") -> Summary:
    """Mean, standard deviation (ddof=1) and the 95 % Student t interval of ``values``."""
    xs = _finite(values, what)
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have equal means.

    ``None`` when either group has fewer than two values. Two groups of identical constant
    values give 1.0 (no evidence of a difference); different constants give 0.0.
    """
    xa, xb = _finite(a, "a"), _finite(b, "b")
    if len(xa) < 2 or len(xb) < 2:
        return None
    sa, sb = summarize(xa), summarize(xb)
    if sa.std == 0 and sb.std == 0:
        return 1.0 if sa.mean == sb.mean else 0.0
    from scipy import stats

    return float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)


def significantly_different(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> bool | None:
    """Whether Welch's test rejects equal means at ``alpha``; ``None`` when it cannot be tested."""
    p = welch_p(a, b)
    return None if p is None else p < alpha


def significantly_above(values: Sequence[float], reference: float, alpha: float = ALPHA) -> bool | None:
    """Whether the mean of ``values`` is above ``reference`` by a one-sided t-test at ``alpha``.

    Used to flag tasks (accuracy vs chance) and games (return vs a random policy) that were not
    learned. ``None`` with fewer than two values.
    """
    xs = _finite(values, "values")
    if len(xs) < 2:
        return None
    s = summarize(xs)
    if s.std == 0:
        return s.mean > reference
    from scipy import stats

    return bool(stats.ttest_1samp(xs, reference, alternative="greater").pvalue < alpha)


def significantly_greater(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> bool:
    """Whether the mean of ``a`` is above the mean of ``b`` by Welch's one-sided t-test at ``alpha``.

    Used to decide whether a trained RL agent's evaluation returns beat a random policy's. Groups
    of fewer than two values, or two constant groups, are compared by their means alone (a
    difference that cannot be tested is accepted only when it is exact, i.e. with no spread).
    """
    xa, xb = _finite(a, "a"), _finite(b, "b")
    sa, sb = summarize(xa), summarize(xb)
    if len(xa) < 2 or len(xb) < 2 or (sa.std == 0 and sb.std == 0):
        return sa.mean > sb.mean
    from scipy import stats

    return bool(stats.ttest_ind(xa, xb, equal_var=False, alternative="greater").pvalue < alpha)
