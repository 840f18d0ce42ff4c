"""Continual RL on MinAtar: finetune, ft-fix, EWC and BLIP over a game sequence.

Modes (each runs `bitcl rl` as subprocesses, at most ``--jobs`` at a time, niced, 1 torch
thread each, run folders under ``--work``; the summary JSON goes to benchmarks/results/):

Every run evaluates 100 episodes per game per matrix entry (``bitcl rl``'s default) and is
normalised by a single-task reference run of the same seed and budget (``--single-task``, then
``--reference``: Continual World, Wołczyk et al. 2021).

* ``tune``: the method settings chosen on validation seeds (``--tune-seeds``, default 100,101,
  never reported; the games in reverse order): BLIP's ``--fisher-prior`` and EWC's ``--c`` over a
  grid wide enough that neither choice lies on its edge in the committed result; choice = highest
  mean score whose mean forgetting is at most 0.05 (else the lowest mean forgetting).
  -> rl_tuning.json
* ``sequence``: the reported runs, seeds 0,1,2 x the four methods at the settings rl_tuning.json
  chose; per method the mean, standard deviation and 95 % t interval of score and forgetting,
  Welch's test of BLIP against finetune, ft-fix and EWC, the targets checked (BLIP's forgetting
  <= 0.05 at the upper end of its interval; BLIP's score significantly above finetune and
  ft-fix), and the mean normalised matrix per method plotted to docs/rl_normalised.png.
  -> rl_sequence.json
* ``speed``: in this one process, alternating, ``--repeats`` times: BLIP (quantised trunk, the
  projection after every optimiser step) and plain float PPO (finetune, float trunk) for
  ``--speed-steps`` steps on Breakout; the median ratio of environment steps per second and
  BLIP's consolidation time as a fraction of the game's training time; then float PPO at 1 and
  2 torch threads (the default of ``--threads``).  -> rl_speed.json

    python benchmarks/bench_rl.py tune
    python benchmarks/bench_rl.py sequence
    python benchmarks/bench_rl.py speed
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import code_version, write_result  # noqa: E402

GAMES = ("breakout", "space_invaders", "freeway")
METHODS = ("finetune", "ft-fix", "ewc", "blip")
PRIORS = (1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
EWC_CS = (1e-2, 1.0, 1e2, 1e4, 1e6)
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def method_args(method: str, prior: float, c: float) -> list[str]:
    if method == "blip":
        return ["--fisher-prior", repr(prior)]
    if method == "ewc":
        return ["--mode", "online", "--c", repr(c)]
    return []


def run(tag: str, args: list[str], work: str) -> dict:
    """One `bitcl rl` run; a finished run folder with the same command, made by the same code
    (:func:`code_version`), is reused (resumable figures)."""
    out = os.path.join(work, tag)
    cmd = [sys.executable, "-m", "bitcl", "rl", *args, "--threads", "1", "--quiet", "--out", out]
    done_file = os.path.join(out, "results.json")
    marker = os.path.join(out, "command.json")
    made_by = {"command": cmd[3:-1], "code": code_version()}
    if os.path.exists(done_file) and os.path.exists(marker) and json.load(open(marker)) == made_by:
        return json.load(open(done_file))
    start = time.time()
    done = subprocess.run(["nice", "-n", "5", *cmd, "--overwrite"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tag}: {' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    json.dump(made_by, open(marker, "w"))
    r = json.load(open(done_file))
    print(f"{tag}: score {r['score']} over {r['score_over']}, forgetting {r['forgetting']} "
          f"({time.time() - start:.0f}s)", flush=True)
    return r


def run_all(jobs: list[tuple[str, list[str]]], work: str, workers: int) -> dict[str, dict]:
    """Run ``jobs`` (tag, args) at most ``workers`` at a time."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {tag: pool.submit(run, tag, args, work) for tag, args in jobs}
        return {tag: f.result() for tag, f in futures.items()}


def summary(r: dict) -> dict:
    keys = ("score", "score_over", "forgetting", "forgetting_over", "unlearned_games", "return_matrix",
            "return_intervals", "random_returns", "reference_returns", "normalised_matrix", "capacity",
            "steps_trained")
    out = {k: r.get(k) for k in keys}
    out["state_bytes"] = r["memory"]["state_bytes"]
    out["steps_per_second"] = r["timing"]["steps_per_second"]
    out["consolidate_seconds"] = r["timing"]["consolidate_seconds"]
    out["train_seconds"] = r["timing"]["train_seconds"]
    out["eval_seconds"] = r["timing"]["eval_seconds"]
    return out


def choose(results: list[tuple[float, list[dict]]]) -> float:
    """Highest mean score whose mean forgetting is at most 0.05, else the lowest mean forgetting."""
    from bitcl.stats import summarize
    rows = []
    for value, rs in results:
        sc = [r["score"] for r in rs if r["score"] is not None]
        fg = [r["forgetting"] for r in rs if r["forgetting"] is not None]
        rows.append((summarize(sc).mean if sc else -1e9, summarize(fg).mean if fg else 1e9, value))
    ok = [(s, v) for s, f, v in rows if f <= 0.05]
    return max(ok)[1] if ok else min((f, v) for _, f, v in rows)[1]


def _jobs(games: str, steps: int, seeds: list[int], variants: dict[str, list[str]], work: str) -> list:
    """Per seed: the single-task reference run first, then every variant normalised by it."""
    base = ["--games", games, "--steps", str(steps)]
    jobs = [(f"reference-s{s}", base + ["--method", "finetune", "--single-task", "--seed", str(s)]) for s in seeds]
    for s in seeds:
        ref = os.path.join(work, f"reference-s{s}", "results.json")
        jobs += [(f"{name}-s{s}", base + extra + ["--seed", str(s), "--reference", ref])
                 for name, extra in variants.items()]
    return jobs


def _run_phased(jobs: list, work: str, workers: int) -> dict[str, dict]:
    """The reference runs first (the others read their results.json), then the rest."""
    refs = [j for j in jobs if j[0].startswith("reference-")]
    runs = run_all(refs, work, workers)
    runs.update(run_all([j for j in jobs if not j[0].startswith("reference-")], work, workers))
    return runs


def tune(args) -> None:
    """BLIP's --fisher-prior and EWC's --c on validation seeds (not the reported ones)."""
    games = ",".join(reversed(GAMES))
    seeds = [int(s) for s in args.tune_seeds.split(",")]
    variants = {f"blip-{p:g}": ["--method", "blip"] + method_args("blip", p, 0) for p in PRIORS}
    variants.update({f"ewc-{c:g}": ["--method", "ewc"] + method_args("ewc", 0, c) for c in EWC_CS})
    runs = _run_phased(_jobs(games, args.steps, seeds, variants, args.work), args.work, args.jobs)
    blip = [(p, [runs[f"blip-{p:g}-s{s}"] for s in seeds]) for p in PRIORS]
    ewc = [(c, [runs[f"ewc-{c:g}-s{s}"] for s in seeds]) for c in EWC_CS]
    result = {"benchmark": "rl_tuning", "split": {"seeds": seeds, "games": games, "steps": args.steps},
              "rule": "highest mean score with mean forgetting <= 0.05, else lowest mean forgetting",
              # keys such as "1e-03": no "." in them, so a figure marker's dotted path can name one
              "blip_prior": {f"{p:.0e}": [summary(r) for r in rs] for p, rs in blip}, "chosen_blip_prior": choose(blip),
              "ewc_c": {f"{c:.0e}": [summary(r) for r in rs] for c, rs in ewc}, "chosen_ewc_c": choose(ewc)}
    write_result("rl_tuning", result, indent=1)
    print(f"chosen: --fisher-prior {result['chosen_blip_prior']:g}, EWC --c {result['chosen_ewc_c']:g}")


def _tuned() -> tuple[float, float]:
    """The settings rl_tuning.json chose (the sequence never uses values picked on its own seeds)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "rl_tuning.json")
    if not os.path.exists(path):
        raise SystemExit("run `python benchmarks/bench_rl.py tune` first: the sequence uses its choices")
    tuned = json.load(open(path))
    return tuned["chosen_blip_prior"], tuned["chosen_ewc_c"]


def sequence(args) -> None:
    from bitcl.stats import summarize, welch_p
    seeds = [int(s) for s in args.seeds.split(",")]
    prior, c = _tuned()
    variants = {m: ["--method", m] + method_args(m, prior, c) for m in METHODS}
    runs = _run_phased(_jobs(",".join(GAMES), args.steps, seeds, variants, args.work), args.work, args.jobs)
    per_method = {}
    for m in METHODS:
        rs = [runs[f"{m}-s{s}"] for s in seeds]
        sc = [r["score"] for r in rs if r["score"] is not None]
        fg = [r["forgetting"] for r in rs if r["forgetting"] is not None]
        per_method[m] = {"score": summarize(sc).as_dict() if sc else None, "score_values": sc,
                         "forgetting": summarize(fg).as_dict() if fg else None, "forgetting_values": fg,
                         "runs": {f"seed {s}": summary(r) for s, r in zip(seeds, rs)}}
    blip = per_method["blip"]
    comparisons = {f"blip_vs_{m}": {"score_p_welch": welch_p(blip["score_values"], per_method[m]["score_values"])}
                   for m in ("finetune", "ft-fix", "ewc")}
    for v in comparisons.values():
        v["significant"] = v["score_p_welch"] is not None and v["score_p_welch"] < 0.05
    targets = {
        "blip_forgetting_upper_95_at_most_0.05": (blip["forgetting"] or {}).get("high") is not None
                                                  and blip["forgetting"]["high"] <= 0.05,
        "blip_score_above_finetune_significantly": comparisons["blip_vs_finetune"]["significant"]
                                                   and blip["score"]["mean"] > per_method["finetune"]["score"]["mean"],
        "blip_score_above_ft_fix_significantly": comparisons["blip_vs_ft-fix"]["significant"]
                                                 and blip["score"]["mean"] > per_method["ft-fix"]["score"]["mean"],
        "blip_state_bytes_constant": all(len(set(r["state_bytes"])) == 1 for r in blip["runs"].values()),
        "unlearned_games": {m: {s: r["unlearned_games"] for s, r in v["runs"].items()} for m, v in per_method.items()},
    }
    result = {"benchmark": "rl_sequence", "games": list(GAMES), "steps_per_game": args.steps, "seeds": seeds,
              "evaluation": "100 episodes per game per matrix entry (bitcl rl's default), 95 % Student t intervals; "
                            "normalised by a single-task reference run per seed (Continual World)",
              "settings": {"blip --fisher-prior": prior, "ewc --mode online --c": c,
                           "source": "benchmarks/results/rl_tuning.json (validation seeds, reversed games)"},
              "methods": per_method, "comparisons": comparisons, "targets": targets,
              "plots": ["docs/rl_normalised.png"]}
    write_result("rl_sequence", result, indent=1)  # first: the plot rewrites a tracked file (the tree must be clean)
    plot(per_method, seeds)
    for m in METHODS:
        s, f = per_method[m]["score"], per_method[m]["forgetting"]
        print(f"{m:9s} score {s and summarize(per_method[m]['score_values']).format(3)}  "
              f"forgetting {f and summarize(per_method[m]['forgetting_values']).format(3)}")
    print(json.dumps({k: v for k, v in targets.items() if k != "unlearned_games"}, indent=1))


def plot(per_method: dict, seeds: list[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, len(per_method), figsize=(3.2 * len(per_method), 3.2))
    for ax, (m, v) in zip(axes, per_method.items()):
        mats = [np.array([[np.nan if x is None else x for x in row] for row in r["normalised_matrix"]], float)
                for r in v["runs"].values()]
        mean = np.nanmean(np.stack(mats), 0)
        ax.imshow(mean, vmin=-0.2, vmax=1.2, cmap="viridis")
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                ax.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if mean[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(GAMES)), GAMES, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(GAMES)), [f"after {g}" for g in GAMES], fontsize=7)
        sc, fg = v["score"], v["forgetting"]
        ax.set_title(f"{m}: score {sc['mean'] if sc else float('nan'):.2f}, "
                     f"forgetting {fg['mean'] if fg else float('nan'):.2f}", fontsize=8)
    fig.suptitle(f"MinAtar, normalised return (mean of seeds {','.join(map(str, seeds))})", fontsize=9)
    fig.tight_layout()
    os.makedirs(DOCS, exist_ok=True)
    fig.savefig(os.path.join(DOCS, "rl_normalised.png"), dpi=120)


def _in_process(method: str, backbone: str, steps: int, threads: int, seed: int) -> dict:
    from bitcl.rl.config import RLConfig
    from bitcl.rl.loop import RLRun
    config = RLConfig(method=method, backbone=backbone, games=("breakout",), steps=steps, seed=seed,
                      threads=threads, quiet=True, eval_episodes=1, eval_max_steps=1)
    r = RLRun(config).run()
    return {"steps_per_second": r.timing["steps_per_second"][0], "train_seconds": r.timing["train_seconds"][0],
            "consolidate_seconds": r.timing["consolidate_seconds"][0]}


def speed(args) -> None:
    rows = {"blip": [], "float": [], "float_threads_1": [], "float_threads_2": []}
    for rep in range(args.repeats):  # alternate so that load changes hit both alike
        rows["blip"].append(_in_process("blip", "quant", args.speed_steps, 1, rep))
        rows["float"].append(_in_process("finetune", "float", args.speed_steps, 1, rep))
    for rep in range(args.repeats):
        rows["float_threads_1"].append(_in_process("finetune", "float", args.speed_steps, 1, rep))
        rows["float_threads_2"].append(_in_process("finetune", "float", args.speed_steps, 2, rep))
    med = {k: statistics.median(x["steps_per_second"] for x in v) for k, v in rows.items()}
    fraction = [x["consolidate_seconds"] / x["train_seconds"] for x in rows["blip"]]
    result = {"benchmark": "rl_speed", "game": "breakout", "steps": args.speed_steps, "repeats": args.repeats,
              "median_steps_per_second": med,
              "ratio_blip_over_float": med["blip"] / med["float"],
              "ratios_per_repeat": [b["steps_per_second"] / f["steps_per_second"]
                                    for b, f in zip(rows["blip"], rows["float"])],
              "blip_consolidation_fraction_of_training": fraction,
              "ratio_threads_2_over_1": med["float_threads_2"] / med["float_threads_1"],
              "targets": {"blip_at_least_0.9x_float": med["blip"] / med["float"] >= 0.9,
                          "consolidation_at_most_5pct": max(fraction) <= 0.05},
              "runs": rows}
    write_result("rl_speed", result, indent=1)
    print(f"BLIP / float PPO steps/s: {result['ratio_blip_over_float']:.3f} (medians {med['blip']:.0f} / "
          f"{med['float']:.0f}); consolidation / training: {max(fraction):.4f}; "
          f"2 threads / 1 thread: {result['ratio_threads_2_over_1']:.3f}")
    print("note: consolidation is measured on --speed-steps of training; at the sequence's steps per game "
          "the fraction is smaller in proportion (rl_sequence.json holds those timings)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("tune", "sequence", "speed"))
    p.add_argument("--steps", type=int, default=60_000,
                   help="environment steps per game, for tune and sequence alike (the settings are chosen at the "
                        "budget they are reported at; every game is learned above random at 60000)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tune-seeds", default="100,101", help="validation seeds of `tune` (never reported)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--work", default="/tmp/bitcl_rl_bench", help="run folders")
    p.add_argument("--speed-steps", type=int, default=20_480, help="steps per speed measurement")
    p.add_argument("--repeats", type=int, default=3, help="speed measurements per variant")
    args = p.parse_args()
    if args.mode == "speed":
        import torch
        torch.set_num_threads(1)
        return speed(args)
    tune(args) if args.mode == "tune" else sequence(args)


if __name__ == "__main__":
    main()
