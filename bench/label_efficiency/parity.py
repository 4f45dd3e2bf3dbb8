"""The same experiment through the platform: one configuration as a real campaign, compared
number for number with the in-process simulation (`sim.py`) at the same seed.

    .venv/bin/python -m bench.label_efficiency.parity            # infomax, 3 rounds of B=64
    .venv/bin/python -m bench.label_efficiency.parity --help

The campaign uses the platform's `pool` policy backend over a *pool package* written from the
environment (the pool's texts and the learner's features, `PoolPolicy.save`), the `oracle`
judge with the environment's oracle settings, and the benchmark's reward-model setup. Its
rounds go through the round engine (generate, select, judge, learn, evaluate) with rows in a
database and model versions on disk; this command runs them in its own process
(`campaign_run_inline`, SQLite under `var/`), the test (`tests/bench/test_parity.py`)
on a Celery worker with PostgreSQL and Redis. After each round the exact win rate of that
round's policy version against the initial policy is computed exactly as `sim.run` computes
it, and the two series must agree.

Every algorithm runs as a campaign. A campaign is one budget: the simulation evaluates each
budget of its grid as the end of a campaign of that budget (`ml_worker.core.rounds`), so the
two are compared after each round where the campaign has a new policy: every round online,
periodic's refits every `periodic_tau` rounds and at the last round, offline's at the last.

The two agree exactly when the oracle's rewards computed by the judge during the campaign
equal the environment's (always with the oracle's `hashing` encoder; with all-MiniLM-L6-v2 up
to float rounding of the encoder, which could flip a label only if a draw fell within about
1e-7 of its probability).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from ml_worker.core import rounds
from ml_worker.core.evaluation import exact_pair_win_probs
from ml_worker.core.policies.pool import PoolPolicy

from . import sim
from .env import ENVIRONMENTS, PoolEnv

ROOT = Path(__file__).resolve().parents[2]

#: The simulation's algorithms as campaign fields (algorithm, acquisition rule).
CAMPAIGN_ALGORITHMS = {
    "offline": ("offline", "uniform"),
    "periodic": ("periodic", "uniform"),
    "online": ("online", "uniform"),
    "online_no_nudge": ("online", "uniform"),
    "infomax": ("infomax", "infomax"),
    "double_ts": ("online", "double_thompson"),
}


def setup_platform_in(work: Path) -> None:
    """Set Django up on a platform of its own in folder `work`: a SQLite database (migrated),
    model artifacts and a file-system broker there, for rounds run in this process."""
    work.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'db.sqlite3'}"
    os.environ["ARTIFACT_ROOT"] = str(work / "artifacts")
    os.environ["CELERY_BROKER_URL"] = f"filesystem://{work / 'broker'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def write_pool_package(env: PoolEnv, path: Path) -> Path:
    """The pool package of `env` for `policy_config.path`: its texts, the learner's features,
    the initial policy's logits and whether the policy has per-prompt capacity."""
    PoolPolicy(
        env.pool,
        env.features,
        env.prompts,
        base_logits=env.base_logits,
        per_prompt=env.per_prompt,
    ).save(Path(path), include_pool=True)
    return Path(path)


def oracle_rewards(env: PoolEnv, judge_config: dict) -> torch.Tensor:
    """[P, C] rewards of the oracle judge built from `judge_config`, for every candidate."""
    from ml_worker.core.judges.base import build_judge

    oracle = build_judge(judge_config)
    if judge_config.get("kind") != "oracle":
        raise ValueError("the benchmark's judge is the oracle (judge_config kind 'oracle')")
    refs = env.references or [None] * len(env.prompts)
    P, C = env.rewards.shape
    return oracle.reward(
        [p for p in env.prompts for _ in range(C)],
        [t for cands in env.pool for t in cands],
        [r for r in refs for _ in range(C)],
    ).reshape(P, C)


def prompts_per_round(env: PoolEnv, setup: sim.Setup) -> int:
    """B, as `sim.run` takes it: all training prompts when there are fewer than the setup's."""
    return min(setup.prompts_per_round, len(env.split("train")))


def campaign_fields(
    env: PoolEnv,
    algorithm: str,
    hp: sim.Hparams,
    setup: sim.Setup,
    *,
    seed: int,
    budget: int,
    package: Path,
    judge_config: dict,
) -> dict:
    """`campaign_create` keyword arguments of the campaign that `sim.run` mirrors."""
    if algorithm not in CAMPAIGN_ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {algorithm!r}; choose from {list(CAMPAIGN_ALGORITHMS)}"
        )
    algo = sim.ALGORITHMS[algorithm]
    kind, rule = CAMPAIGN_ALGORITHMS[algorithm]
    B = prompts_per_round(env, setup)
    rounds = math.ceil(budget / B)
    return {
        "algorithm": kind,
        "acquisition_rule": rule,
        "feedback_mode": "judge",
        "prompts_per_round": B,
        "responses_per_prompt": setup.samples_per_prompt,
        "max_rounds": rounds,
        "eval_every": rounds,
        "periodic_tau": setup.periodic_tau,
        "seed": seed,
        "label_cap": budget,
        "policy_config": {
            "backend": "pool",
            "path": str(package),
            "lr": hp.policy_lr,
            "kl_coef": hp.kl_coef,
            "nudge": hp.nudge if algo.nudged else 0.0,
            "seed": seed,
            "eval_prompts": len(env.split("eval")),
        },
        "reward_config": json.loads(json.dumps(setup.reward)),  # tuples as lists
        "judge_config": dict(judge_config),
    }


def prompts_jsonl(env: PoolEnv) -> str:
    """The environment's prompts for `prompts_import`, in the environment's order (the round
    engine draws from the training prompts in that order, as `sim.run` does)."""
    refs = env.references or [None] * len(env.prompts)
    lines = []
    for prompt, split, ref in zip(env.prompts, env.splits, refs, strict=True):
        lines.append(json.dumps({"prompt": prompt, "split": split, "reference": ref or ""}))
    return "\n".join(lines)


def create_campaign(owner, name: str, env: PoolEnv, **fields):
    """A started campaign with its prompts (needs Django set up)."""
    from rlhf_platform.campaigns.services import (
        campaign_create,
        campaign_set_state,
        prompts_import,
    )

    campaign = campaign_create(owner=owner, name=name, **fields)
    prompts_import(campaign=campaign, content=prompts_jsonl(env), fmt="jsonl")
    return campaign_set_state(campaign=campaign, action="start")


def campaign_win_rates(env: PoolEnv, campaign, package: Path) -> list[dict]:
    """After each round of `campaign` that made a policy version: labels so far, rounds, and
    the exact win rate of that version against the initial policy on the evaluation prompts."""
    from rlhf_platform.labeling.models import Label
    from rlhf_platform.rounds.models import ModelKind, ModelVersion
    from rlhf_platform.rounds.services import artifact_path

    pool = PoolPolicy.load(package)
    eval_idx = env.split("eval")
    base = pool.probs(eval_idx)
    out, labels = [], 0
    for rnd in campaign.rounds.order_by("index"):
        labels += Label.objects.filter(comparison__round=rnd).count()
        version = ModelVersion.objects.filter(
            campaign=campaign, kind=ModelKind.POLICY, round=rnd
        ).first()
        if version is None:
            continue  # offline and periodic learn only in some rounds
        policy = PoolPolicy.load(artifact_path(version), pool_from=pool)
        win = exact_pair_win_probs(
            env.rewards[eval_idx], policy.probs(eval_idx), base, temperature=env.temperature
        )
        out.append({"labels": labels, "rounds": rnd.index + 1, "win_rate": float(win.mean())})
    return out


def sim_win_rates(
    env: PoolEnv, algorithm: str, hp: sim.Hparams, setup: sim.Setup, *, seed: int, budget: int
) -> list[dict]:
    """`sim.run` evaluated after every round of the campaign's budget where the campaign makes
    a policy version (`ml_worker.core.rounds`)."""
    B = prompts_per_round(env, setup)
    n = math.ceil(budget / B)
    schedule = sim.ALGORITHMS[algorithm].schedule
    budgets = [
        min(budget, B * (r + 1))
        for r in range(n)
        if schedule == rounds.ONLINE
        or rounds.refits(schedule, r, last=r == n - 1, periodic_tau=setup.periodic_tau)
    ]
    return sim.run(
        env,
        sim.ALGORITHMS[algorithm],
        hp,
        budgets,
        seed=seed,
        train_idx=env.split("train"),
        eval_idx=env.split("eval"),
        setup=setup,
    )


def compare(platform_rows: list[dict], sim_rows: list[dict], *, tol: float = 1e-6) -> list[str]:
    """What differs between the two series (empty when they agree)."""
    if [(r["labels"], r["rounds"]) for r in platform_rows] != [
        (r["labels"], r["rounds"]) for r in sim_rows
    ]:
        return [f"labels per round differ: platform {platform_rows}, simulation {sim_rows}"]
    return [
        f"round {p['rounds']}: platform {p['win_rate']:.9f}, simulation {s['win_rate']:.9f}"
        for p, s in zip(platform_rows, sim_rows, strict=True)
        if abs(p["win_rate"] - s["win_rate"]) > tol
    ]


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency.parity",
        description="Run one configuration as a platform campaign and in process; compare.",
    )
    p.add_argument("--algorithm", default="infomax", choices=list(CAMPAIGN_ALGORITHMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", default="held_out", choices=list(ENVIRONMENTS))
    p.add_argument("--rounds", type=int, default=3, help="budget = rounds x B labels")
    p.add_argument("--results", type=Path, default=ROOT / "bench/results/label_efficiency")
    p.add_argument("--work", type=Path, default=ROOT / "var/bench/label_efficiency/parity")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    from .env import load_env

    env = load_env(environment=args.env)
    setup = sim.Setup()
    chosen = _chosen_hparams(args.results / args.env / "results.json", args.algorithm)
    budget = args.rounds * prompts_per_round(env, setup)
    judge_config = {"kind": "oracle", "temperature": env.temperature}

    work = args.work / f"{args.algorithm}-seed{args.seed}-{int(time.time())}"
    setup_platform_in(work)
    from rlhf_platform.accounts.models import Role, User
    from rlhf_platform.rounds.services import campaign_run_inline

    package = write_pool_package(env, work / "pool-package")
    owner = User.objects.create_user(username="bench", role=Role.RESEARCHER)
    fields = campaign_fields(
        env, args.algorithm, chosen, setup, seed=args.seed, budget=budget,
        package=package, judge_config=judge_config,
    )  # fmt: skip
    campaign = create_campaign(owner, f"{args.algorithm}-seed{args.seed}", env, **fields)
    started = time.monotonic()
    with tqdm(total=fields["max_rounds"], desc="platform rounds", unit="round") as bar:
        campaign_run_inline(
            campaign_id=campaign.pk,
            rounds=fields["max_rounds"],
            on_round_done=lambda rnd: bar.update(1),
        )
    platform_s = time.monotonic() - started
    on_platform = campaign_win_rates(env, campaign, package)
    started = time.monotonic()
    in_process = sim_win_rates(env, args.algorithm, chosen, setup, seed=args.seed, budget=budget)
    sim_s = time.monotonic() - started
    differences = compare(on_platform, in_process)
    report = {
        "algorithm": args.algorithm,
        "seed": args.seed,
        "hparams": vars(chosen),
        "budget": budget,
        "platform": on_platform,
        "platform_seconds": round(platform_s, 1),
        "simulation": in_process,
        "simulation_seconds": round(sim_s, 1),
        "agree": not differences,
        "differences": differences,
    }
    out = args.results / "platform_parity.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for a, b in zip(on_platform, in_process, strict=False):
        print(
            f"round {a['rounds']}: {a['labels']} labels, win rate platform {a['win_rate']:.6f}"
            f", in process {b['win_rate']:.6f}"
        )
    print(("AGREE" if not differences else "DIFFER:\n  " + "\n  ".join(differences)) + f" ({out})")
    return 0 if not differences else 1


def _chosen_hparams(results: Path, algorithm: str) -> sim.Hparams:
    """The tuned values of the last full run, else the defaults."""
    try:
        chosen = json.loads(results.read_text())["chosen"][algorithm]
    except (OSError, KeyError, ValueError):
        print(f"no tuned values for {algorithm} in {results}: using the defaults", file=sys.stderr)
        return sim.Hparams()
    return sim.Hparams(**{k: chosen[k] for k in ("policy_lr", "nudge", "kl_coef") if k in chosen})


if __name__ == "__main__":
    raise SystemExit(main())
