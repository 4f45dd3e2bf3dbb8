"""Label-efficiency benchmark: offline / periodic / online / information-directed RLHF.

    .venv/bin/python -m bench.label_efficiency            # full run (log grid 256..16384)
    .venv/bin/python -m bench.label_efficiency --quick    # small grid, 2 seeds, no tuning

Steps (each run is cached in var/bench/label_efficiency/runs.jsonl, so an interrupted
benchmark resumes where it stopped):
1. the environment (`env.py`): pool, learner features and oracle rewards, computed once;
2. tuning: every algorithm gets the same grid of 9 (policy learning rate, nudge) values (the
   no-nudge ablation: learning rate x KL coefficient), each run once with the tuning seed,
   trained on 3/4 of the training prompts and scored (mean win rate over the tuning budgets)
   on the other 1/4. The evaluation prompts and the reported seeds are never used to tune;
3. the reported runs: each algorithm with its chosen values, on all training prompts, scored
   on the evaluation prompts, for `--seeds` seeds;
4. outputs under `--out`: results.json (everything, incl. the chosen values and the setup),
   win_rate.png / .svg, table.md (labels to reach offline's best win rate, ratio to
   offline, the fit w(n) = 1 - 0.5 (n / a) ** (-b)).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
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

from . import report, sim  # noqa: E402
from .env import CACHE_DIR, DEFAULT_POOL, PoolEnv, load_env  # noqa: E402
from .sim import ALGORITHMS, Hparams, Setup, run  # noqa: E402

TUNE_SEED = 1000
LR_GRID = (0.01, 0.03, 0.1)
NUDGE_GRID = (0.05, 0.1, 0.2)
KL_GRID = (0.03, 0.1, 0.3)  # the no-nudge ablation's second axis


def tuning_grid(algorithm: str) -> list[Hparams]:
    if ALGORITHMS[algorithm].nudged:
        return [
            Hparams(policy_lr=lr, nudge=nu) for lr, nu in itertools.product(LR_GRID, NUDGE_GRID)
        ]
    return [
        Hparams(policy_lr=lr, nudge=0.0, kl_coef=kl)
        for lr, kl in itertools.product(LR_GRID, KL_GRID)
    ]


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
    ap.add_argument("--quick", action="store_true", help="budgets 256..1024, 2 seeds, no tuning")
    ap.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    ap.add_argument("--min-labels", type=int, default=256)
    ap.add_argument("--max-labels", type=int, default=16384)
    ap.add_argument(
        "--tune-max-labels",
        type=int,
        default=2048,
        help="tuning runs stop here (default 2048: the full run stays under 30 minutes on 2 cores)",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
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
    if args.min_labels < 1 or args.max_labels < args.min_labels or args.seeds < 1:
        ap.error("need 1 <= --min-labels <= --max-labels and --seeds >= 1")
    if not args.synthetic and not args.pool.exists():
        ap.error(f"pool file {args.pool} not found (build it with bench/build_pool.py)")
    torch.set_num_threads(max(1, args.threads))

    started = time.time()
    env = (
        PoolEnv.synthetic(prompts=48, candidates=16, dim=16)
        if args.synthetic
        else load_env(args.pool, feature_dim=args.feature_dim)
    )
    if len(env.split("eval")) == 0 or len(env.split("train")) < 4:
        ap.error(
            f"{args.pool} has {len(env.split('train'))} train and {len(env.split('eval'))} eval prompts: need both"
        )
    setup = Setup(prompts_per_round=16, samples_per_prompt=4) if args.synthetic else Setup()
    budgets = log_grid(args.min_labels, args.max_labels)
    tune_budgets = log_grid(args.min_labels, min(args.tune_max_labels, args.max_labels))
    args.out.mkdir(parents=True, exist_ok=True)
    cache = RunCache(args.out / "runs.jsonl")
    # A change to the algorithms' code invalidates the cached runs.
    code = hashlib.sha256(Path(sim.__file__).read_bytes()).hexdigest()[:16]
    base_key = {"env": env.description, "setup": asdict(setup), "sim": code}

    # Tuning: same number of configurations per algorithm, tuning seed and prompts only.
    fit_idx, val_idx = tuning_split(env)
    chosen: dict[str, Hparams] = {}
    tuning: dict[str, list[dict]] = {}
    grid = [] if args.no_tune else [(a, hp) for a in algorithms for hp in tuning_grid(a)]
    tuned = cache.run_all(
        env,
        [
            (
                base_key
                | {"role": "tune", "algorithm": name, "hp": asdict(hp), "budgets": tune_budgets},
                Job(name, hp, tune_budgets, TUNE_SEED, fit_idx, val_idx, setup),
            )
            for name, hp in grid
        ],
        workers=args.jobs,
        desc="tuning runs",
    )
    for (name, hp), res in zip(grid, tuned, strict=True):
        score = sum(p["win_rate"] for p in res) / len(res)
        tuning.setdefault(name, []).append({"hp": asdict(hp), "score": score})
    for name in algorithms:
        if args.no_tune:
            chosen[name] = Hparams() if ALGORITHMS[name].nudged else Hparams(nudge=0.0)
        else:
            best = max(tuning[name], key=lambda t: t["score"])
            chosen[name] = Hparams(**best["hp"])

    # Reported runs.
    train_idx, eval_idx = env.split("train"), env.split("eval")
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

    table = report.match_table(runs)
    fits = {name: report.fit_power_law(report.mean_curve(c)) for name, c in runs.items()}
    results = {
        "command": "python -m bench.label_efficiency "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "elapsed_s": round(time.time() - started, 1),
        "environment": env.description,
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
        },
        "chosen": {name: asdict(hp) for name, hp in chosen.items()},
        "runs": runs,
        "mean_curves": {name: report.mean_curve(c) for name, c in runs.items()},
        "match": table,
        "fit": fits,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    paths = report.plot(
        runs,
        args.out / "win_rate",
        f"{env.description['train_prompts']} train / {env.description['eval_prompts']} eval prompts, "
        f"{env.description['candidates_per_prompt']} candidates, {args.seeds} seeds",
    )
    md = markdown(results)
    (args.out / "table.md").write_text(md)
    print(md)
    print(
        f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}, " + ", ".join(map(str, paths))
    )
    return 0


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


def markdown(results: dict) -> str:
    table = results["match"]
    lines = [
        f"Target: offline's best mean win rate, {table['target_win_rate']:.3f}.",
        "",
        "| algorithm | chosen values | win rate at max labels (mean, min-max) | labels to reach target (median) | seeds reaching | ratio offline / algorithm (mean, min-max) | fit a | fit b |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table["algorithms"].items():
        last = results["mean_curves"][name][-1]
        hp = results["chosen"][name]
        values = f"lr {hp['policy_lr']:g}, " + (
            f"nudge {hp['nudge']:g}" if hp["nudge"] else f"kl {hp['kl_coef']:g}"
        )
        labels = (
            f"{row['median_labels']:.0f}"
            if row["median_labels"] is not None
            else f"> {last['labels']}"
        )
        ratio = (
            f"{row['ratio_mean']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
            if row["ratio_mean"] is not None
            else "n/a"
        )
        fit = results["fit"][name]
        lines.append(
            f"| {name} | {values} | {last['win_rate']:.3f} ({last['low']:.3f}-{last['high']:.3f}) | {labels} "
            f"| {row['seeds_reaching']}/{len(row['labels_per_seed'])} | {ratio} "
            f"| {'n/a' if fit['a'] is None else format(fit['a'], '.3g')} | {fit['b']:.3g} |"
        )
    return "\n".join(lines) + "\n"
