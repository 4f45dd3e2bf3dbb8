"""Raters benchmark: a simulated crowd of 20 raters labels through the platform's services;
how well the rater model ranks and flags them, and what weighting or excluding them does to
the reward model and the policy.

    .venv/bin/python -m bench.raters --synthetic              # the synthetic pool (minutes)
    .venv/bin/python -m bench.raters                          # the label-efficiency pool
    .venv/bin/python -m bench.raters --synthetic --budgets 100 200 --seeds 1   # a smoke run

The label-efficiency pool needs its learner features, ``bench/data/pool_features.npz``
(SmolLM2 over every pool response, hours on 2 CPU cores): this benchmark uses them when they
exist and refuses otherwise; it never computes them. The run creates a throw-away test
database (Django's ``test_<name>``) on the configured server and drops it at the end.
Outputs under ``--out``: results.json (every seed), table.md, accuracy.png, win_rate.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench/raters/results"
POOL_FEATURES = ROOT / "bench/data/pool_features.npz"
#: The goals of issue 20.
GOAL_RATIO = 0.5  # weighted needs at most half the labels of unweighted
GOAL_FLAG_LABELS = 100  # every bad rater flagged within 100 of their labels


def synthetic_env(*, seed: int = 0, prompts: int = 80, candidates: int = 8, dim: int = 16):
    """``PoolEnv.synthetic`` with texts of random lengths (the ``longer`` rater's cue, not
    related to the rewards) and rewards doubled (careful raters right ~80% of the time)."""
    from bench.label_efficiency.env import PoolEnv

    env = PoolEnv.synthetic(prompts=prompts, candidates=candidates, dim=dim, seed=seed)
    rng = random.Random(seed)
    env.pool = [
        [f"p{p}-c{c} " + "word " * rng.randint(5, 60) for c in range(candidates)]
        for p in range(prompts)
    ]
    env.rewards = env.rewards * 2.0
    env.description = (env.description or {}) | {"texts": "random lengths", "reward_scale": 2.0}
    return env


def labels_needed(points: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which a mean curve first reaches ``target`` (linear in log labels between
    grid points); None if it never does."""
    prev = None
    for labels, acc in points:
        if acc >= target:
            if prev is None or prev[1] >= target:
                return float(labels)
            (l0, a0), (l1, a1) = prev, (labels, acc)
            f = (target - a0) / (a1 - a0)
            return float(math.exp(math.log(l0) + f * (math.log(l1) - math.log(l0))))
        prev = (labels, acc)
    return None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from .sim import MODES

    budgets = [b["labels"] for b in runs[0]["budgets"]]
    curves: dict[str, dict[str, list[dict[str, float]]]] = {}
    for metric in ("rm_accuracy", "win_rate"):
        curves[metric] = {}
        for mode in MODES:
            rows = []
            for i, labels in enumerate(budgets):
                vals = [
                    r["budgets"][i]["modes"][mode][metric] for r in runs if len(r["budgets"]) > i
                ]
                rows.append(
                    {
                        "labels": labels,
                        "mean": sum(vals) / len(vals),
                        "min": min(vals),
                        "max": max(vals),
                    }
                )
            curves[metric][mode] = rows
    acc = curves["rm_accuracy"]
    target = acc["unweighted"][-1]["mean"]
    needed = {
        mode: labels_needed([(r["labels"], r["mean"]) for r in acc[mode]], target) for mode in MODES
    }
    ratio = (
        needed["weighted"] / needed["unweighted"]
        if needed["weighted"] and needed["unweighted"]
        else None
    )
    # The same question at every budget: the labels weighted (or excluded) training needs to
    # reach what unweighted training reaches with b labels, over b (less fragile than the
    # largest budget alone when the unweighted curve is flat there).
    by_budget = []
    for row in acc["unweighted"]:
        entry = {"labels": row["labels"], "unweighted_accuracy": row["mean"]}
        for mode in ("weighted", "excluded"):
            n = labels_needed([(r["labels"], r["mean"]) for r in acc[mode]], row["mean"])
            entry[mode] = None if n is None else n / row["labels"]
            # Already there at the grid's first budget: the ratio is an upper bound.
            entry[f"{mode}_upper_bound"] = n is not None and n <= budgets[0]
        by_budget.append(entry)
    bad = [(run["seed"], r) for run in runs for r in run["raters"] if r["bad"]]
    flag_labels = [r["first_flagged_at_labels"] for _, r in bad]
    good_flagged = sorted(
        {
            f"{r['name']} (seed {s})"
            for run in runs
            for r in run["raters"]
            if not r["bad"]
            for s in [run["seed"]]
            if r["first_flagged_at_labels"] is not None
        }
    )
    spearman = [[b["spearman"] for b in run["budgets"]] for run in runs]
    final_rho = [s[-1] for s in spearman if s and s[-1] is not None]
    return {
        "budgets": budgets,
        "curves": curves,
        "target_accuracy": target,
        "labels_needed": needed,
        "weighted_over_unweighted": ratio,
        "label_ratios_by_budget": by_budget,
        "goal_ratio_met": ratio is not None and ratio <= GOAL_RATIO,
        "spearman_by_budget": spearman,
        "spearman_final_mean": sum(final_rho) / len(final_rho) if final_rho else None,
        "bad_raters_flagged_at": [
            {
                "seed": s,
                "name": r["name"],
                "kind": r["kind"],
                "labels": r["first_flagged_at_labels"],
                "of": r["labels"],
                "flags": r["flags"],
            }
            for s, r in bad
        ],
        "goal_flag_met": all(x is not None and x <= GOAL_FLAG_LABELS for x in flag_labels),
        "good_raters_ever_flagged": good_flagged,
    }


def table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    from .sim import MODES

    lines = [
        f"# Raters benchmark ({meta['environment']})",
        "",
        f"Seeds {meta['seeds']}; budgets {summary['budgets']} training labels (gold labels not "
        f"counted); overlap 2; {meta['wall_s']:.0f} s wall.",
    ]
    for metric, title in (
        ("rm_accuracy", "Reward-model pairwise accuracy on held-out oracle pairs"),
        ("win_rate", "Policy win rate against the initial policy"),
    ):
        lines += [
            "",
            f"## {title} (mean [min, max] over seeds)",
            "",
            "| labels | " + " | ".join(MODES) + " |",
            "|---|" + "---|" * len(MODES),
        ]
        for i, labels in enumerate(summary["budgets"]):
            cells = [
                "{mean:.3f} [{min:.3f}, {max:.3f}]".format(**summary["curves"][metric][m][i])
                for m in MODES
            ]
            lines.append(f"| {labels} | " + " | ".join(cells) + " |")
    needed = summary["labels_needed"]
    fmt = lambda v: "not reached" if v is None else f"{v:.0f}"  # noqa: E731
    lines += [
        "",
        f"Labels to reach {summary['target_accuracy']:.3f} (unweighted's accuracy at the largest "
        f"budget): unweighted {fmt(needed['unweighted'])}, weighted {fmt(needed['weighted'])}, "
        f"excluded {fmt(needed['excluded'])}. Weighted / unweighted: "
        + (
            "n/a"
            if summary["weighted_over_unweighted"] is None
            else f"{summary['weighted_over_unweighted']:.2f}"
        )
        + f" (goal <= {GOAL_RATIO}: {'met' if summary['goal_ratio_met'] else 'not met'}).",
        "",
        "Labels each needs to reach what unweighted reaches with b labels, over b:",
        "",
        "| b | unweighted accuracy | weighted / unweighted | excluded / unweighted |",
        "|---|---|---|---|",
        *[
            f"| {e['labels']} | {e['unweighted_accuracy']:.3f} | "
            + " | ".join(
                "-"
                if e[m] is None
                else ("<= " if e.get(f"{m}_upper_bound") else "") + f"{e[m]:.2f}"
                for m in ("weighted", "excluded")
            )
            + " |"
            for e in summary["label_ratios_by_budget"]
        ],
        "",
        "Spearman of estimated against true reliability at the largest budget, mean over seeds: "
        + (
            "n/a"
            if summary["spearman_final_mean"] is None
            else f"{summary['spearman_final_mean']:.3f}"
        )
        + ".",
        "",
        "## Labels each bad rater had given when first flagged",
        "",
        "| seed | rater | kind | flagged at (their labels) | of | flags at the end |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["bad_raters_flagged_at"]:
        lines.append(
            f"| {r['seed']} | {r['name']} | {r['kind']} | "
            f"{'never' if r['labels'] is None else r['labels']} | {r['of']} | "
            f"{', '.join(r['flags']) or '-'} |"
        )
    lines += [
        "",
        f"Every bad rater flagged within {GOAL_FLAG_LABELS} of their labels: "
        f"{'met' if summary['goal_flag_met'] else 'not met'}. Good raters ever flagged: "
        f"{', '.join(summary['good_raters_ever_flagged']) or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # a dev dependency; the JSON and the table are enough
        return
    for metric, name in (("rm_accuracy", "accuracy.png"), ("win_rate", "win_rate.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, rows in summary["curves"][metric].items():
            x = [r["labels"] for r in rows]
            ax.plot(x, [r["mean"] for r in rows], marker="o", label=mode)
            ax.fill_between(x, [r["min"] for r in rows], [r["max"] for r in rows], alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training labels")
        ax.set_ylabel("held-out pairwise accuracy" if metric == "rm_accuracy" else "win rate")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="the synthetic pool")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=None)
    parser.add_argument("--prompts", type=int, default=80, help="synthetic prompts")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--report", type=Path, default=None, help="re-render the outputs of a results.json"
    )
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        summary = summarize(data["runs"])
        data["summary"] = summary
        args.report.write_text(json.dumps(data, indent=1, default=str))
        text = table(summary, data["meta"])
        (args.report.parent / "table.md").write_text(text)
        plot(summary, args.report.parent)
        print(text)
        return 0

    import django

    django.setup()
    import torch
    from django.test.utils import setup_databases, teardown_databases

    from rlhf_platform.labeling import services as labeling

    from .sim import BenchSetup, run_seed

    torch.set_num_threads(1)
    if args.synthetic:
        env = synthetic_env(prompts=args.prompts)
        budgets = args.budgets or [200, 400, 800, 1600]
        name = "synthetic"
    else:
        if not POOL_FEATURES.exists():
            print(
                f"{POOL_FEATURES.relative_to(ROOT)} is missing: this benchmark does not compute "
                "SmolLM2 features (hours on 2 cores); run with --synthetic, or build them with "
                "bench/label_efficiency first.",
                file=sys.stderr,
            )
            return 2
        from bench.label_efficiency.env import load_env

        env = load_env(environment="held_out")
        budgets = args.budgets or [250, 500, 1000, 2000, 4000]
        name = "label_efficiency_pool"
    out = args.out or DEFAULT_OUT / name
    out.mkdir(parents=True, exist_ok=True)
    # The benchmark refits the rater model itself at fixed points; no Celery task is sent.
    labeling.refit_soon = lambda campaign_id: None
    started = time.time()
    # A database of its own, never the test suite's test_<name> (a pytest run beside the
    # benchmark would drop it).
    from django.db import connections

    connections["default"].settings_dict.setdefault("TEST", {})["NAME"] = (
        f"bench_raters_{os.getpid()}"
    )
    old = setup_databases(verbosity=0, interactive=False)
    try:
        runs = []
        for seed in range(args.seeds):

            def progress(seed, labels, modes):
                print(
                    f"seed {seed} labels {labels}: "
                    + ", ".join(
                        f"{m} acc {v['rm_accuracy']:.3f} win {v['win_rate']:.3f}"
                        for m, v in modes.items()
                    ),
                    flush=True,
                )

            runs.append(
                run_seed(env, seed=seed, budgets=budgets, setup=BenchSetup(), progress=progress)
            )
    finally:
        teardown_databases(old, verbosity=0)
    meta = {
        "environment": name,
        "env": env.description,
        "seeds": args.seeds,
        "setup": BenchSetup().__dict__,
        "wall_s": time.time() - started,
        "load_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    summary = summarize(runs)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1, default=str)
    )
    text = table(summary, meta)
    (out / "table.md").write_text(text)
    plot(summary, out)
    print(text)
    return 0
