"""Was each task learned? A check on the accuracy matrix's diagonal, with a reason when not.

A task is *not learned* when its test accuracy right after its own training, ``A[t][t]``, is
confidently at or below chance plus a margin:

    upper(k, n) <= chance_t + MARGIN

with ``k`` of ``n`` test samples correct and ``upper`` the one-sided 95 % Clopper-Pearson upper
bound of the accuracy (the exact binomial bound, ``Beta(0.95; k + 1, n - k)``). Testing the
bound, not the observed accuracy, keeps small test sets from being over-flagged: 6 of 10 correct
on a 2-class task (bound 0.85) is not called unlearned, 300 of 600 (bound 0.53) is.

``chance_t`` is one over the number of classes the prediction of task ``t`` chooses among when
it is evaluated right after its training: the task's own head in task-incremental learning, the
classes seen so far in class-incremental learning (bitcl masks the outputs of classes not yet
seen), the shared head's outputs in domain- and data-incremental learning (and in ``bitcl.fit``,
the number of outputs the model gives). ``MARGIN`` is 0.1 (accuracy, absolute).

For a run with Bit layers the reason states the share of bits that were frozen before the task
and, per quantised tensor, the *range left*: the mean over its weights of ``2^-k`` (``k`` frozen
bits), the fraction of its range ``[-R, R]`` the free bits can still move a weight across (a
weight's window is ``2R / 2^k`` wide). Nothing frozen points to the optimiser (learning rate,
epochs); little range left points to freezing.
"""
from __future__ import annotations

from typing import Optional, Sequence

MARGIN = 0.1
CONFIDENCE = 0.95
RULE = (f"not learned: the one-sided {CONFIDENCE:.0%} Clopper-Pearson upper bound of the accuracy after the "
        f"task's own training is <= chance + {MARGIN} (chance: 1 / classes the prediction chooses among)")


def upper_bound(correct: int, total: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper confidence bound of a binomial proportion ``correct / total``."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct} of {total}")
    if correct == total:
        return 1.0
    # the Beta(correct + 1, total - correct) quantile, which is scipy.stats.beta.ppf (bit for bit: checked on
    # every count up to 300 and more): scipy.special imports in a fraction of the second scipy.stats takes,
    # and every run makes this check
    from scipy import special
    return float(special.betaincinv(correct + 1, total - correct, confidence))


def _freezing_reason(before: Optional[float], range_left: Optional[dict]) -> str:
    if before is None:
        return "no Bit layers: nothing was frozen (check the learning rate, epochs and model)"
    text = f"{before:.1%} of the bits were frozen before this task"
    if before == 0:
        return text + ": not a freezing problem (check the learning rate, epochs and model)"
    if range_left:
        worst = sorted(range_left.items(), key=lambda item: item[1])[:4]
        text += "; range left (mean 2^-k per tensor, smallest): " + ", ".join(f"{n} {v:.2g}" for n, v in worst)
    return text


def check_learned(matrix: Sequence[Sequence[float]], chance: Sequence[float], test_samples: Sequence[int],
                  capacity: Sequence[float] = (), range_left: Sequence[dict] = ()) -> list[dict]:
    """The tasks not learned (module docstring), each ``{task, accuracy, chance, test_samples,
    upper_bound, reason}``. ``capacity[t]`` / ``range_left[t]``: frozen share and range left per
    tensor after task ``t`` (empty for runs without Bit layers)."""
    flagged = []
    for t in range(min(len(matrix), len(chance), len(test_samples))):
        accuracy, n = float(matrix[t][t]), int(test_samples[t])
        if n <= 0:
            continue
        bound = upper_bound(min(n, max(0, round(accuracy * n))), n)
        if bound > chance[t] + MARGIN:
            continue
        if t == 0:
            before = 0.0 if capacity else None
            left = None
        else:
            before = capacity[t - 1] if len(capacity) >= t else None
            left = range_left[t - 1] if len(range_left) >= t else None
        flagged.append({"task": t, "accuracy": accuracy, "chance": chance[t], "test_samples": n,
                        "upper_bound": bound, "reason": _freezing_reason(before, left)})
    return flagged


def warning_lines(flagged: Sequence[dict]) -> list[str]:
    """One warning line per task not learned (the run summary's)."""
    return [f"WARNING: task {f['task']} not learned: accuracy {f['accuracy']:.4f} on {f['test_samples']} test "
            f"samples, chance {f['chance']:.3f} (upper bound {f['upper_bound']:.3f} <= chance + {MARGIN}); "
            f"{f['reason']}" for f in flagged]
