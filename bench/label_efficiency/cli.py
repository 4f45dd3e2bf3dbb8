"""Label-efficiency benchmark: offline / periodic / online / information-directed RLHF.

    .venv/bin/python -m bench.label_efficiency            # the protocol's run, all environments
    .venv/bin/python -m bench.label_efficiency --env in_distribution
    .venv/bin/python -m bench.label_efficiency --quick    # small grid, 2 seeds, no tuning

The protocol (environments, targets, seeds, tuning grid, statistics) is PROTOCOL.md. Steps per
environment (each run is cached in <out>/<env>/runs.jsonl, so an interrupted benchmark resumes
where it stopped):
1. the environment (`env.py`): pool, learner features, SmolLM2 likelihoods, oracle rewards;
2. tuning: every algorithm gets the same grid of (policy learning rate, nudge) values (the
   no-nudge ablation: learning rate x KL coefficient), each run once with the tuning seed on
   3/4 of the training prompts, scored on the other 1/4 (held-out environments) or on the same
   3/4 (in-distribution environments). A chosen value at the grid's edge extends the grid one
   step past it, at most twice per axis. The evaluation prompts and the reported seeds are
   never used to tune;
3. the reported runs: each algorithm with its chosen values, for `--seeds` seeds;
4. outputs under `--out/<env>`: results.json (everything), win_rate.png / .svg,
   rm_top_accuracy.png / .svg, table.md (labels to reach each fixed target, the ratios
   offline / infomax and online / infomax with bootstrap intervals, the paper's fit).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from . import report  # noqa: E402
from .env import CACHE_DIR, DEFAULT_POOL, ENVIRONMENTS, ROOT, PoolEnv, load_env  # noqa: E402
from .explained import explained_variance  # noqa: E402
from .sim import ALGORITHMS, Hparams, Setup, run  # noqa: E402

TUNE_SEED = 1000
#: Ladders of candidate values; tuning starts on the middle of each (the `*_START` slice) and
#: moves one rung out when a chosen value lands on an edge (at most `MAX_EXTENSIONS` times).
LR_LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LR_START = (2, 6)  # 0.01, 0.03, 0.1, 0.3
NUDGE_LADDER = (0.01, 0.03, 0.1, 0.3, 1.0)
NUDGE_START = (1, 4)  # 0.03, 0.1, 0.3
KL_LADDER = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # the no-nudge ablation's second axis
KL_START = (2, 5)  # 0.03, 0.1, 0.3
MAX_EXTENSIONS = 2
DEFAULT_ALGORITHMS = ("offline", "periodic", "online", "infomax", "double_ts")


def ladders(algorithm: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    second = NUDGE_LADDER if ALGORITHMS[algorithm].nudged else KL_LADDER
    return LR_LADDER, second


def hparams(algorithm: str, lr: float, second: float) -> Hparams:
    if ALGORITHMS[algorithm].nudged:
        return Hparams(policy_lr=lr, nudge=second)
    return Hparams(policy_lr=lr, nudge=0.0, kl_coef=second)


def tuning_grid(algorithm: str, window: tuple[tuple[int, int], tuple[int, int]]) -> list[Hparams]:
    """The grid of `algorithm` over the ladder slices `window` ((lr lo, hi), (second lo, hi))."""
    (lr_lo, lr_hi), (s_lo, s_hi) = window
    lrs, seconds = ladders(algorithm)
    return [
        hparams(algorithm, lr, sec)
        for lr, sec in itertools.product(lrs[lr_lo:lr_hi], seconds[s_lo:s_hi])
    ]


def start_window(algorithm: str) -> tuple[tuple[int, int], tuple[int, int]]:
    return LR_START, (NUDGE_START if ALGORITHMS[algorithm].nudged else KL_START)


def extend(
    window: tuple[tuple[int, int], tuple[int, int]], chosen: tuple[int, int], algorithm: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window with one more rung on each axis where the chosen index is on its edge (and
    the ladder goes on)."""
    sizes = [len(lad) for lad in ladders(algorithm)]
    out = []
    for (lo, hi), idx, size in zip(window, chosen, sizes, strict=True):
        if idx == lo and lo > 0:
            lo -= 1
        elif idx == hi - 1 and hi < size:
            hi += 1
        out.append((lo, hi))
    return out[0], out[1]


def tuning_split(env: PoolEnv) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, validation) prompts for tuning: a fixed 3/4 - 1/4 split of the training prompts."""
    train = env.split("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(TUNE_SEED))
    n_val = max(1, len(train) // 4)
    return train[order[n_val:]].sort().values, train[order[:n_val]].sort().values


def log_grid(lo: int, hi: int) -> list[int]:
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return out


class RunCache:
    """Finished runs by key, appended as JSON lines (resumable benchmark)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, list[dict]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                self.done[row["key"]] = row["results"]

    @staticmethod
    def key(key_parts: dict) -> str:
        return hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()

    def add(self, key_parts: dict, results: list[dict]) -> None:
        key = self.key(key_parts)
        self.done[key] = results
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "parts": key_parts, "results": results}) + "\n")

    def run_all(
        self, env: PoolEnv, jobs: list[tuple[dict, Job]], *, workers: int, desc: str
    ) -> list[list[dict]]:
        """Results of every job, in order: cached ones read back, the others run (in
        `workers` processes of one thread each when workers > 1) and appended as they end."""
        todo = [(parts, job) for parts, job in jobs if self.key(parts) not in self.done]
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run")
        if workers <= 1 or len(todo) <= 1:
            for parts, job in todo:
                self.add(parts, job.run(env))
                bar.update()
        else:
            # spawn, not fork: a forked child of a process that used torch's thread pool can hang.
            ctx = multiprocessing.get_context("spawn")
            # Refits make offline and periodic runs the longest: start them first.
            todo.sort(key=lambda item: ALGORITHMS[item[1].algorithm].schedule == "online")
            with ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=ctx, initializer=_init_worker, initargs=(env,)
            ) as pool:
                futures = {pool.submit(_run_in_worker, job): parts for parts, job in todo}
                for done in as_completed(futures):
                    self.add(futures[done], done.result())
                    bar.update()
        bar.close()
        return [self.done[self.key(parts)] for parts, _ in jobs]


@dataclass(frozen=True)
class Job:
    """One call of `sim.run`, picklable for a worker process."""

    algorithm: str
    hp: Hparams
    budgets: list[int]
    seed: int
    train_idx: torch.Tensor
    eval_idx: torch.Tensor
    setup: Setup

    def run(self, env: PoolEnv) -> list[dict]:
        return run(
            env,
            ALGORITHMS[self.algorithm],
            self.hp,
            self.budgets,
            seed=self.seed,
            train_idx=self.train_idx,
            eval_idx=self.eval_idx,
            setup=self.setup,
        )


_WORKER_ENV: PoolEnv | None = None


def _init_worker(env: PoolEnv) -> None:
    global _WORKER_ENV
    torch.set_num_threads(1)
    _WORKER_ENV = env


def _run_in_worker(job: Job) -> list[dict]:
    assert _WORKER_ENV is not None
    return job.run(_WORKER_ENV)


def main(argv: list[str] | None = None) -> int:
    previous = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(previous)


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--env",
        default="all",
        help=f"environment(s), comma-separated, or all: {', '.join(ENVIRONMENTS)}",
    )
    ap.add_argument("--quick", action="store_true", help="budgets up to 1024, 2 seeds, no tuning")
    ap.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    ap.add_argument("--min-labels", type=int, default=64)
    ap.add_argument("--max-labels", type=int, default=16384)
    ap.add_argument(
        "--tune-max-labels",
        type=int,
        default=2048,
        help="tuning runs stop here (default 2048)",
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS))
    ap.add_argument("--no-tune", action="store_true", help="use the default values for all")
    ap.add_argument("--out", type=Path, default=CACHE_DIR / "results")
    ap.add_argument(
        "--feature-dim", type=int, default=128, help="principal components of the features kept"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the runs made in this process (default 1, as in each worker "
        "process, so that no result depends on --jobs: a sum's order follows the thread count)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel, in worker processes of one thread each (default: one per core)",
    )
    ap.add_argument(
        "--synthetic", action="store_true", help="a small random environment (smoke test only)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.max_labels, args.seeds, args.no_tune = (
            min(args.max_labels, 1024),
            min(args.seeds, 2),
            True,
        )
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        ap.error(f"unknown algorithm(s) {unknown}; choose among {sorted(ALGORITHMS)}")
    if "offline" not in algorithms:
        ap.error("offline is the reference of the table: keep it in --algorithms")
    envs = list(ENVIRONMENTS) if args.env == "all" else [e.strip() for e in args.env.split(",")]
    unknown = sorted(set(envs) - set(ENVIRONMENTS))
    if unknown or not envs:
        ap.error(f"unknown environment(s) {unknown}; choose among {', '.join(ENVIRONMENTS)}, all")
    if args.min_labels < 1 or args.max_labels < args.min_labels or args.seeds < 1:
        ap.error("need 1 <= --min-labels <= --max-labels and --seeds >= 1")
    if not args.synthetic and not args.pool.exists():
        ap.error(f"pool file {args.pool} not found (build it with bench/build_pool.py)")
    torch.set_num_threads(max(1, args.threads))
    command = "python -m bench.label_efficiency " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    for name in envs:
        started = time.time()
        env = (
            PoolEnv.synthetic(
                prompts=48, candidates=16, dim=16, in_distribution=ENVIRONMENTS[name].per_prompt
            )
            if args.synthetic
            else load_env(args.pool, environment=name, feature_dim=args.feature_dim)
        )
        if len(env.split("eval")) == 0 or len(env.split("train")) < 4:
            ap.error(
                f"{args.pool} has {len(env.split('train'))} train and "
                f"{len(env.split('eval'))} eval prompts: need both"
            )
        print(f"== environment {name}: {ENVIRONMENTS[name].summary}", flush=True)
        run_environment(env, args, algorithms, args.out / name, command, started)
    return 0


#: The code a run's numbers depend on: the simulation and the ML core's round functions it
#: calls (the learners, the acquisition rules, the update signals, the seeds, the evaluation).
ALGORITHMS_CODE = (
    "bench/label_efficiency/sim.py",
    "ml_worker/core/rounds.py",
    "ml_worker/core/seeds.py",
    "ml_worker/core/acquisition.py",
    "ml_worker/core/update.py",
    "ml_worker/core/enn.py",
    "ml_worker/core/enn_config.py",
    "ml_worker/core/evaluation.py",
    "ml_worker/core/policies/pool.py",
)


def algorithms_code_hash() -> str:
    """A hash of `ALGORITHMS_CODE`, part of every cached run's key."""
    digest = hashlib.sha256()
    for name in ALGORITHMS_CODE:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def run_environment(
    env: PoolEnv,
    args: argparse.Namespace,
    algorithms: list[str],
    out: Path,
    command: str,
    started: float,
) -> dict:
    """Tuning, reported runs and outputs of one environment (see the module docstring)."""
    setup = Setup(prompts_per_round=16, samples_per_prompt=4) if args.synthetic else Setup()
    budgets = log_grid(args.min_labels, args.max_labels)
    tune_budgets = log_grid(args.min_labels, min(args.tune_max_labels, args.max_labels))
    out.mkdir(parents=True, exist_ok=True)
    cache = RunCache(out / "runs.jsonl")
    # A change to the algorithms' code invalidates the cached runs.
    code = algorithms_code_hash()
    base_key = {"env": env.description, "setup": asdict(setup), "sim": code}

    # Before any algorithm: how much of the oracle the learner's features can explain.
    explained = explained_variance(env.features, env.rewards, env.split("train"), env.split("eval"))
    print(
        f"features explain R^2 = {explained['r2']:.3f} of the oracle's rewards on held-out "
        f"prompts ({explained['r2_within']:.3f} within prompts)",
        flush=True,
    )
    fit_idx, val_idx = tuning_split(env)
    if env.eval_split == "train":  # in-distribution: scored on the prompts it trains on
        val_idx = fit_idx
    chosen: dict[str, Hparams] = {}
    tuning: dict[str, list[dict]] = {name: [] for name in algorithms}
    windows = {name: start_window(name) for name in algorithms}
    at_edge: dict[str, list[str]] = {}
    for attempt in range(0 if args.no_tune else MAX_EXTENSIONS + 1):
        grid = [(a, hp) for a in windows for hp in tuning_grid(a, windows[a])]
        tuned = cache.run_all(
            env,
            [
                (
                    base_key
                    | {
                        "role": "tune",
                        "algorithm": name,
                        "hp": asdict(hp),
                        "budgets": tune_budgets,
                    },
                    Job(name, hp, tune_budgets, TUNE_SEED, fit_idx, val_idx, setup),
                )
                for name, hp in grid
            ],
            workers=args.jobs,
            desc=f"tuning runs ({attempt + 1})",
        )
        for name in windows:
            tuning[name] = []
        for (name, hp), res in zip(grid, tuned, strict=True):
            score = sum(p["win_rate"] for p in res) / len(res)
            tuning[name].append({"hp": asdict(hp), "score": score})
        grown = {}
        for name in windows:
            best = Hparams(**max(tuning[name], key=lambda t: t["score"])["hp"])
            chosen[name] = best
            lrs, seconds = ladders(name)
            second = best.nudge if ALGORITHMS[name].nudged else best.kl_coef
            index = (lrs.index(best.policy_lr), seconds.index(second))
            wider = extend(windows[name], index, name)
            edges = [
                axis
                for axis, (lo, hi), idx in zip(("lr", "second"), windows[name], index, strict=True)
                if idx in (lo, hi - 1)
            ]
            if wider != windows[name] and attempt < MAX_EXTENSIONS:
                grown[name] = wider
            elif edges:
                at_edge[name] = edges
        windows = grown
        if not windows:
            break
    for name in algorithms:
        if args.no_tune:
            chosen[name] = Hparams() if ALGORITHMS[name].nudged else Hparams(nudge=0.0)

    # Reported runs.
    train_idx, eval_idx = env.split("train"), env.split(env.eval_split)
    reported = [(a, s) for a in algorithms for s in range(args.seeds)]
    results_per_job = cache.run_all(
        env,
        [
            (
                base_key
                | {
                    "role": "report",
                    "algorithm": name,
                    "hp": asdict(chosen[name]),
                    "budgets": budgets,
                    "seed": seed,
                },
                Job(name, chosen[name], budgets, seed, train_idx, eval_idx, setup),
            )
            for name, seed in reported
        ],
        workers=args.jobs,
        desc="reported runs",
    )
    runs: dict[str, list[list[dict]]] = {}
    for (name, _), res in zip(reported, results_per_job, strict=True):
        runs.setdefault(name, []).append(res)

    comparisons = {
        f"{a} - {b}": report.bootstrap_difference(runs[a], runs[b])
        for a, b in (("infomax", "online"), ("infomax", "offline"))
        if a in runs and b in runs
    }
    results = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "elapsed_s": round(time.time() - started, 1),
        "environment": env.description,
        "explained_variance": explained,
        "setup": asdict(setup),
        "budgets": budgets,
        "seeds": list(range(args.seeds)),
        "tuning": {
            "seed": TUNE_SEED,
            "budgets": tune_budgets,
            "fit_prompts": len(fit_idx),
            "validation_prompts": len(val_idx),
            "tuned": not args.no_tune,
            "grid": tuning,
            "chosen_at_ladder_edge": at_edge,
        },
        "chosen": {name: asdict(hp) for name, hp in chosen.items()},
        "runs": runs,
        "mean_curves": {name: report.mean_curve(c) for name, c in runs.items()},
        "targets": report.target_table(runs),
        "win_rate_differences": comparisons,
        "fit": {name: report.fit_power_law(report.mean_curve(c)) for name, c in runs.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    title = (
        f"{env.description.get('environment', 'synthetic')}: "
        f"{len(train_idx)} train prompts, scored on {len(eval_idx)} "
        f"{'training' if env.eval_split == 'train' else 'held-out'} prompts, {args.seeds} seeds"
    )
    paths = report.plot(runs, out / "win_rate", title)
    paths += report.plot(
        runs,
        out / "rm_top_accuracy",
        title,
        key="rm_top_accuracy",
        ylabel="reward model accuracy on the policy's top-4 pairs",
    )
    md = markdown(results)
    (out / "table.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, " + ", ".join(map(str, paths)))
    return results


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")),
            "",
        )
    except OSError:
        model = ""
    return f"{os.cpu_count()} cores {model}, {platform.system()} {platform.machine()}, torch {torch.__version__}"


def _labels(n: float | None, budgets: list[int]) -> str:
    if n is None:
        return f"> {budgets[-1]:,}"
    return f"<= {n:,.0f}" if n <= budgets[0] else f"{n:,.0f}"


def _ratio(r: dict) -> str:
    if r["ratio"] is None:
        return "n/a"
    if r.get("censored"):
        return f"censored ({r['ratio']:.2f})"

    def f(x: float) -> str:
        return "inf" if math.isinf(x) else f"{x:.2f}"

    return f"{f(r['ratio'])} [{f(r['low'])}, {f(r['high'])}]"


def markdown(results: dict) -> str:
    """The environment's tables: labels to reach each target, ratios with 95% bootstrap
    intervals, win rates and reward-model accuracy at the largest budget."""
    t = results["targets"]
    budgets = results["budgets"]
    names = list(results["runs"])
    n_seeds = len(results["seeds"])
    ev = results["explained_variance"]
    lines = [
        f"Environment: {results['environment'].get('environment', 'synthetic')} "
        f"({results['environment'].get('summary', '')}); {n_seeds} seeds.",
        "",
        f"Before any algorithm: a ridge regression on the learner's features explains R^2 = "
        f"{ev['r2']:.3f} of the oracle's rewards on the held-out prompts, {ev['r2_within']:.3f} "
        f"within prompts (on the training prompts it fits: {ev['train_r2']:.3f} / "
        f"{ev['train_r2_within']:.3f}; within-prompt share of the reward variance "
        f"{ev['within_share_of_variance']:.3f}).",
        "",
        "Labels to reach each fixed win rate (mean curve over seeds; seeds reaching it):",
        "",
        "| algorithm | " + " | ".join(f"{x:.2f}" for x in t["targets"]) + " |",
        "|---|" + "---|" * len(t["targets"]),
    ]
    for name in names:
        cells = [
            f"{_labels(n, budgets)} ({k}/{n_seeds})"
            for n, k in zip(t["labels"][name], t["seeds_reaching"][name], strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios of labels needed (95% bootstrap interval over seeds; > 1: the second needs "
        "fewer; inf: the first never reaches the target within the largest budget):",
        "",
        "| ratio | " + " | ".join(f"{x:.2f}" for x in t["targets"]) + " |",
        "|---|" + "---|" * len(t["targets"]),
    ]
    for key, row in t["ratios"].items():
        lines.append(f"| {key} | " + " | ".join(_ratio(r) for r in row) + " |")
    lines += [
        "",
        "| algorithm | chosen values | win rate at "
        f"{budgets[-1]:,} labels (mean, min-max) | RM accuracy on the policy's top-4 pairs "
        f"at {budgets[0]:,} / {budgets[-1]:,} labels | fit a | fit b |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        mc = results["mean_curves"][name]
        hp = results["chosen"][name]
        values = f"lr {hp['policy_lr']:g}, " + (
            f"nudge {hp['nudge']:g}" if hp["nudge"] else f"kl {hp['kl_coef']:g}"
        )
        fit = results["fit"][name]
        acc = (
            f"{mc[0]['rm_top_accuracy']:.3f} / {mc[-1]['rm_top_accuracy']:.3f}"
            if "rm_top_accuracy" in mc[-1]
            else "n/a"
        )
        lines.append(
            f"| {name} | {values} | {mc[-1]['win_rate']:.3f} ({mc[-1]['low']:.3f}-"
            f"{mc[-1]['high']:.3f}) | {acc} "
            f"| {'n/a' if fit['a'] is None else format(fit['a'], '.3g')} | {fit['b']:.3g} |"
        )
    if "online/infomax" in t["ratios"]:
        verdicts = [
            f"{x:.2f}: {report.verdict(r['low'], r['high'])}"
            + (" (censored)" if r.get("censored") else "")
            for x, r in zip(t["targets"], t["ratios"]["online/infomax"], strict=True)
        ]
        lines += [
            "",
            "Infomax against uniform online, per target (better: online / infomax interval "
            "above 1): " + "; ".join(verdicts) + ".",
        ]
    for key, diffs in results["win_rate_differences"].items():
        lines += [
            "",
            f"Win rate {key} per budget (95% bootstrap interval): "
            + ", ".join(
                f"{d['labels']:,}: {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                for d in diffs
            ),
        ]
    return "\n".join(lines) + "\n"
