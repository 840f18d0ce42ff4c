"""What a ``bitcl rl`` run produced; :meth:`RLResult.to_json` is the results.json contract
(docs/contracts/rl-results.md).

Raw returns first: ``return_matrix[i][j]`` is the mean evaluation return on game j after
training games 0..i, ``episode_returns[i][j]`` the return of each evaluation episode behind it,
and ``return_intervals[i][j]`` its mean, standard deviation and 95 % Student t interval
(:mod:`bitcl.stats`).

Normalised performance and forgetting follow Continual World (Wołczyk et al., "Continual
World: A Robotic Benchmark For Continual Reinforcement Learning", NeurIPS 2021, Sec. 4),
with returns in place of success rates:

* each game j has a reference return ``ref_j``: a single-task agent trained on game j alone
  with the same budget (``--reference``, a ``bitcl rl --single-task`` run), or, without one,
  the sequence's own return right after training game j (``R[j][j]``);
* ``normalised[i][j] = (R[i][j] - random_j) / (ref_j - random_j)``;
* a game is *learned* when its reference episodes beat the random policy's by Welch's
  one-sided t-test at the 5 % level (:func:`bitcl.stats.significantly_greater`). A game that
  is not learned has no normalised value (a denominator indistinguishable from zero would
  blow up or flip the sign); it is listed in ``unlearned_games`` and left out of the means;
* ``score``: mean of the last row over the learned games (``score_over`` names them; ``None``
  when no game was learned: never a bare 1.0);
* ``forgetting``: mean over learned games j < T-1 of ``normalised[j][j] - normalised[T-1][j]``,
  the drop from the end of game j's own training to the end of the sequence (Continual World's
  F_i); ``forgetting_over`` names them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import bitcl
from bitcl import stats
from bitcl.errors import ConfigError
from bitcl.versions import code_digest

TIMING_KEYS = ("train_seconds", "steps_per_second", "consolidate_seconds", "eval_seconds")
CITATION = ("Wołczyk et al. 2021, Continual World: A Robotic Benchmark For Continual Reinforcement Learning "
            "(NeurIPS), Sec. 4: performance relative to a reference, forgetting as the drop from the end of "
            "a task's own training to the end of the sequence")
# the settings a single-task reference run must share with the run it normalises
REFERENCE_SETTINGS = ("suite", "steps", "envs", "rollout", "backbone", "bits", "eval_episodes", "eval_seed",
                      "eval_policy", "eval_max_steps")


def learned_games(reference: list[list[float]], random: list[list[float]]) -> list[bool]:
    """Per game: do the reference episodes beat the random policy's (Welch, one-sided, 5 %)?"""
    return [stats.significantly_greater(ref, rnd) for ref, rnd in zip(reference, random)]


def normalised_matrix(returns: list[list[float]], random: list[float], reference: list[float],
                      learned: list[bool]) -> list[list[Optional[float]]]:
    """``(R[i][j] - random_j) / (ref_j - random_j)`` for learned games j, ``None`` otherwise."""
    out = []
    for row in returns:
        cells = []
        for j, r in enumerate(row):
            ok = j < len(reference) and learned[j] and reference[j] - random[j] > 0
            cells.append((r - random[j]) / (reference[j] - random[j]) if ok else None)
        out.append(cells)
    return out


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def score(normalised: list[list[Optional[float]]]) -> tuple[Optional[float], list[int]]:
    """Mean of the last row over the games with a normalised value, and those games' indices."""
    if not normalised:
        return None, []
    over = [j for j, v in enumerate(normalised[-1]) if v is not None]
    return _mean([normalised[-1][j] for j in over]), over


def forgetting(normalised: list[list[Optional[float]]]) -> tuple[Optional[float], list[int]]:
    """Mean over games j < T-1 of ``normalised[j][j] - normalised[T-1][j]`` (Continual World's F_j)."""
    if not normalised:
        return None, []
    last = normalised[-1]
    over = [j for j in range(min(len(last), len(normalised)) - 1)
            if normalised[j][j] is not None and last[j] is not None]
    if len(normalised) == 1:
        return None, []
    return _mean([normalised[j][j] - last[j] for j in over]), over


def interval(episodes: Optional[list[float]]) -> Optional[dict]:
    return None if not episodes else stats.summarize(episodes, "episode returns").as_dict()


def read_reference(path: str, config) -> dict[str, list[float]]:
    """The per-game reference episodes of a ``bitcl rl --single-task`` results.json at ``path``.

    Refused (ConfigError, one line) unless it is a single-task run covering every game of
    ``config`` with the same budget and evaluation settings (``REFERENCE_SETTINGS``).
    """
    where = f"--reference {path}"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{where}: not a readable results.json ({error})") from None
    if not isinstance(data, dict) or not data.get("single_task"):
        raise ConfigError(f"{where}: not the results.json of a `bitcl rl --single-task` reference run")
    recorded = data.get("config") or {}
    mismatched = [k for k in REFERENCE_SETTINGS if recorded.get(k) != getattr(config, k)]
    if mismatched:
        shown = ", ".join(f"{k} {recorded.get(k)!r} (this run {getattr(config, k)!r})" for k in mismatched)
        raise ConfigError(f"{where}: the reference differs in {shown}")
    games, episodes = data.get("games"), data.get("episode_returns")
    if not isinstance(games, list) or not isinstance(episodes, list) or len(episodes) != len(games):
        raise ConfigError(f"{where}: missing games or episode_returns")
    found = {g: episodes[j][j] for j, g in enumerate(games)}
    missing = [g for g in config.games if g not in found]
    if missing:
        raise ConfigError(f"{where}: no reference for game(s) {', '.join(missing)}")
    return {g: [float(v) for v in found[g]] for g in config.games}


@dataclass
class RLResult:
    """What a ``bitcl rl`` run produced; :class:`~bitcl.train.runner.ContinualRun` records into it."""

    config: object                      # an RLConfig
    games: list[str]
    random_episodes: list[list[float]] = field(default_factory=list)
    episode_returns: list[list[list[float]]] = field(default_factory=list)
    return_matrix: list[list[float]] = field(default_factory=list)
    reference_episodes: Optional[list[list[float]]] = None  # from --reference, else None
    capacity: list[float] = field(default_factory=list)
    timing: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TIMING_KEYS})
    params: int = 0
    state_bytes: list[int] = field(default_factory=list)
    train_curves: list[dict] = field(default_factory=list)
    steps_trained: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    # -- derived ------------------------------------------------------------------------------
    @property
    def random_returns(self) -> list[float]:
        from .evaluate import mean_of
        return [mean_of(e) for e in self.random_episodes]

    def _reference(self) -> tuple[list[float], list[list[float]]]:
        """Per game trained so far: the reference mean and its episodes."""
        from .evaluate import mean_of
        if self.reference_episodes is not None:
            eps = self.reference_episodes
        else:
            eps = [self.episode_returns[j][j] for j in range(len(self.episode_returns))]
        return [mean_of(e) for e in eps], eps

    def learned(self) -> list[bool]:
        trained = len(self.return_matrix)
        _, eps = self._reference()
        return learned_games(eps[:trained], self.random_episodes[:trained])

    @property
    def normalised(self) -> list[list[Optional[float]]]:
        ref, _ = self._reference()
        learned = self.learned() + [False] * (len(self.games) - len(self.return_matrix))
        return normalised_matrix(self.return_matrix, self.random_returns, ref, learned)

    def normalisation(self) -> dict:
        single = self.reference_episodes is not None
        return {"reference": "single-task" if single else "own-training",
                "source": getattr(self.config, "reference", None) if single else None,
                "learned_test": "Welch one-sided t-test of the reference episodes against the random "
                                f"policy's, p < {stats.ALPHA}",
                "citation": CITATION}

    # -- one game's entries, in the order the runner produces them ---------------------------------
    def record_training(self, seconds: float, hook_seconds: float, steps: int) -> None:
        """The game trained ``steps`` environment steps in ``seconds`` (the per-step hooks' share,
        ``hook_seconds``, is not part of this contract)."""
        self.steps_trained.append(steps)
        self.timing["train_seconds"].append(seconds)
        self.timing["steps_per_second"].append(steps / max(seconds, 1e-9))

    def record_consolidation(self, seconds: float) -> None:
        self.timing["consolidate_seconds"].append(seconds)

    def record_evaluation(self, row: list[float], seconds: float, capacity, state_bytes: int,
                          task_results: dict) -> None:
        """Every game's mean return after this game (evaluated in ``seconds``; the episodes behind
        each mean were appended to ``episode_returns`` by the evaluation), the fraction of frozen
        bits (``capacity``: ``(overall, per layer)``, None without Bit layers), the method's kept
        bytes and its per-game entries."""
        self.timing["eval_seconds"].append(seconds)
        self.return_matrix.append(row)
        if capacity is not None:
            self.capacity.append(capacity[0])
        self.state_bytes.append(state_bytes)
        for key, value in task_results.items():
            self.extra.setdefault(key, []).append(value)

    def task_line(self) -> str:
        """The log line of the game just recorded."""
        t, row, timing = len(self.return_matrix) - 1, self.return_matrix[-1], self.timing
        cap = f", capacity {self.capacity[-1]:.3f}" if self.capacity else ""
        return (f"game {t + 1}/{len(self.games)} {self.games[t]}: return {row[t]:.2f} "
                f"(random {self.random_returns[t]:.2f}), mean over seen {sum(row[:t + 1]) / (t + 1):.2f}, "
                f"{self.steps_trained[-1]:,} steps at {timing['steps_per_second'][-1]:.0f} steps/s, "
                f"consolidate {timing['consolidate_seconds'][-1]:.2f}s{cap}")

    # -- the contract -------------------------------------------------------------------------
    def to_json(self) -> dict:
        norm = self.normalised
        sc, sc_over = score(norm)
        fg, fg_over = forgetting(norm)
        learned = self.learned()
        ref, ref_eps = self._reference()
        out = {
            "bitcl_version": bitcl.__version__,
            "code_digest": code_digest(),
            "method": self.config.method,
            "suite": self.config.suite,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "single_task": bool(getattr(self.config, "single_task", False)),
            "games": list(self.games),
            "tasks": len(self.games),
            "return_matrix": self.return_matrix,
            "return_intervals": [[interval(e) for e in row] for row in self.episode_returns],
            "episode_returns": self.episode_returns,
            "random_returns": self.random_returns,
            "random_intervals": [interval(e) for e in self.random_episodes],
            "random_episode_returns": self.random_episodes,
            "reference_returns": ref,
            "reference_intervals": [interval(e) for e in ref_eps],
            "normalisation": self.normalisation(),
            "normalised_matrix": norm,
            "score": sc,
            "score_over": [self.games[j] for j in sc_over],
            "forgetting": fg,
            "forgetting_over": [self.games[j] for j in fg_over],
            "learned_games": [g for g, ok in zip(self.games, learned) if ok],
            "unlearned_games": [g for g, ok in zip(self.games, learned) if not ok],
            "steps_requested": self.config.steps,
            "steps_trained": self.steps_trained,
        }
        if self.capacity:
            out["capacity"] = self.capacity
        out["timing"] = self.timing
        out["memory"] = {"params": self.params, "state_bytes": self.state_bytes}
        out["train_curves"] = self.train_curves
        out.update(self.extra)
        return out

    def matrix_csv(self) -> tuple[str, str]:
        """The run directory's CSV of the return matrix: its file name and text."""
        rows = [",".join(self.games)]
        rows += [",".join(f"{r:.6f}" for r in row) for row in self.return_matrix]
        return "return_matrix.csv", "\n".join(rows) + "\n"

    PROGRESS_KEYS = ("random_episodes", "episode_returns", "return_matrix", "capacity", "timing", "state_bytes",
                     "train_curves", "steps_trained", "extra")

    def progress(self) -> dict:
        """What a checkpoint carries (as its progress's ``result``) so that ``--resume`` can finish this result."""
        return {key: getattr(self, key) for key in self.PROGRESS_KEYS}

    def restore(self, progress: dict) -> None:
        """Inverse of :meth:`progress`. Checkpoints of bitcl 0.2 hold mean returns only (each entry
        then counts as one episode) and may lack ``steps_trained`` (read from the training curves,
        whose last point is each game's trained steps)."""
        for key in self.PROGRESS_KEYS:
            if key in progress:
                setattr(self, key, progress[key])
        if "episode_returns" not in progress and "return_matrix" in progress:
            self.episode_returns = [[[r] for r in row] for row in progress["return_matrix"]]
        if "random_episodes" not in progress and "random_returns" in progress:
            self.random_episodes = [[r] for r in progress["random_returns"]]
        if "steps_trained" not in progress:
            self.steps_trained = [curve["steps"][-1] for curve in self.train_curves if curve.get("steps")]

    # -- what the run prints ------------------------------------------------------------------
    def summary_line(self) -> str:
        """Score and forgetting with what they average over, and the games not learned."""
        r = self.to_json()
        n = len(self.games)
        basis = ("single-task reference" if r["normalisation"]["reference"] == "single-task"
                 else "return at the end of each game's own training")
        if r["score"] is None:
            text = f"score: none (no game learned above random; normalised by the {basis})"
        else:
            text = f"score {r['score']:.3f} over {len(r['score_over'])}/{n} games"
            text += (f", forgetting {r['forgetting']:.3f} over {len(r['forgetting_over'])} games"
                     if r["forgetting"] is not None else ", forgetting: none (no earlier learned game)")
            text += f" (normalised by the {basis})"
        if r["unlearned_games"]:
            text += (f"; NOT learned above random (Welch p >= {stats.ALPHA}): "
                     + ", ".join(r["unlearned_games"]))
        return text

    def format_matrix(self) -> str:
        """The return matrix as mean ± half-width of each entry's 95 % interval, then the summary."""
        def cell(episodes: list[float]) -> str:
            s = stats.summarize(episodes)
            return f"{s.mean:.2f}" + (f" ± {s.half_width:.2f}" if s.half_width is not None else "")

        cells = [[cell(e) for e in row] for row in self.episode_returns]
        rand = [cell(e) for e in self.random_episodes]
        width = max([len(g) for g in self.games] + [len(c) for row in cells for c in row] + [len(c) for c in rand])
        lines = ["return after \\ on  " + "  ".join(f"{g:>{width}}" for g in self.games)]
        for i, row in enumerate(cells):
            lines.append(f"{self.games[i]:>{18}}  " + "  ".join(f"{c:>{width}}" for c in row))
        lines.append(f"{'random':>18}  " + "  ".join(f"{c:>{width}}" for c in rand))
        episodes = getattr(self.config, "eval_episodes", None)
        lines.append(f"(mean ± half-width of the 95 % t interval over {episodes} evaluation episodes)")
        lines.append(self.summary_line())
        return "\n".join(lines)
