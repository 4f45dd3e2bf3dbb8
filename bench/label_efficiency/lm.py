"""The real LM, briefly: SmolLM2-135M-Instruct with LoRA updates, run as platform campaigns.

    .venv/bin/python -m bench.label_efficiency.lm                 # 3 arms x 8 rounds
    .venv/bin/python -m bench.label_efficiency.lm --rounds 2 --eval-every 1   # a smoke run

Three judge campaigns, identical except for what is compared, each run through the
platform's own round engine (`campaign_run_inline`: the same generate / select / judge /
learn / evaluate steps a Celery worker runs, on a database and model artifacts), with the
`smollm2` policy backend and the `oracle` judge (its defaults, Bradley-Terry temperature
1.0, as in the pool experiment):

- ``infomax``: online, information-directed pairs (the paper's best), nudge 0.1;
- ``offline``: queries from the initial policy with uniform pairs, the reward model fit once
  at the last round on all labels, then the policy optimized against it;
- ``infomax_no_nudge``: ``infomax`` with the nudge held at 0 (the paper's "tanking" ablation).

Every campaign spends the same labels (B prompts x 1 pair per round). The win rate against the
initial policy is the platform's evaluation (greedy answers of both policies on the first
``--eval-prompts`` evaluation prompts, judged by the oracle, with a 95% interval), every
``--eval-every`` rounds. On 2 CPU cores a round costs about a minute, so this is a small
budget; it shows whether the win rate rises and whether the no-nudge arm collapses, not a
label-efficiency ratio (that is the pool experiment's job).

State lives in a SQLite database and artifacts under ``--work`` (default var/bench/lm_short):
an interrupted run resumes where it stopped. Results: ``--out``/lm_short.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from .parity import setup_platform_in

ROOT = Path(__file__).resolve().parents[2]

ARMS = {
    "infomax": {"algorithm": "infomax", "acquisition_rule": "infomax", "nudge": 0.1},
    "offline": {"algorithm": "offline", "acquisition_rule": "uniform", "nudge": 0.1},
    "infomax_no_nudge": {"algorithm": "infomax", "acquisition_rule": "infomax", "nudge": 0.0},
}


def campaign_spec(arm: str, args: argparse.Namespace) -> dict:
    """The platform campaign spec of one arm (docs/campaigns.md): only the arm's keys differ."""
    a = ARMS[arm]
    return {
        "name": f"lm-short-{arm}",
        "algorithm": a["algorithm"],
        "acquisition_rule": a["acquisition_rule"],
        "feedback_mode": "judge",
        "prompts_per_round": args.prompts_per_round,
        "responses_per_prompt": args.responses_per_prompt,
        "max_rounds": args.rounds,
        "eval_every": args.eval_every,
        "seed": args.seed,
        "policy_config": {
            "backend": "smollm2",
            "models_dir": str(ROOT / "var/models"),
            "max_new_tokens": args.max_new_tokens,
            "top_k": 50,
            "temperature": 1.0,
            "lr": args.lr,
            "nudge": a["nudge"],
            "policy_steps": args.policy_steps,
            "eval_prompts": args.eval_prompts,
            "seed": args.seed,
        },
        "reward_config": {"num_particles": 32},
        "judge_config": {"kind": "oracle", "temperature": 1.0},
        "budget": {"label_cap": args.rounds * args.prompts_per_round},
        "prompts": str(ROOT / "bench/data/prompts.jsonl"),
    }


def _campaign(arm: str, args: argparse.Namespace):
    from rlhf_platform.accounts.models import Role, User
    from rlhf_platform.campaigns.models import Campaign
    from rlhf_platform.campaigns.specs import campaign_create_from_spec

    spec = campaign_spec(arm, args)
    existing = Campaign.objects.filter(name=spec["name"]).first()
    if existing is not None:
        if existing.max_rounds != args.rounds or existing.seed != args.seed:
            sys.exit(
                f"error: {spec['name']} exists in {args.work} with other settings; "
                "use another --work folder"
            )
        return existing
    owner, _ = User.objects.get_or_create(username="bench", defaults={"role": Role.RESEARCHER})
    campaign, _ = campaign_create_from_spec(owner=owner, spec=spec, base_dir=ROOT, start=True)
    return campaign


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from rlhf_platform.campaigns.models import Evaluation, RoundState
    from rlhf_platform.rounds.services import campaign_run_inline

    campaign = _campaign(arm, args)
    done = campaign.rounds.filter(state=RoundState.DONE).count()
    bar = tqdm(total=args.rounds, initial=done, desc=arm, unit="round", disable=None)
    started = time.monotonic()

    def on_round(rnd) -> None:
        bar.update(1)
        ev = Evaluation.objects.filter(round=rnd).first()
        if ev is not None:
            bar.write(
                f"{arm} round {rnd.index}: win rate {ev.win_rate:.3f} "
                f"[{ev.ci_low:.3f}, {ev.ci_high:.3f}] at {ev.labels_spent} labels"
            )
        if rnd.state == RoundState.FAILED:
            bar.write(f"{arm} round {rnd.index} failed: {rnd.failure_reason}")

    if done < args.rounds:
        campaign_run_inline(
            campaign_id=campaign.pk, rounds=args.rounds - done, on_round_done=on_round
        )
    bar.close()
    return summarize(campaign, time.monotonic() - started)


def summarize(campaign, seconds: float) -> dict:
    from rlhf_platform.campaigns.models import Evaluation, ModelKind, ModelVersion, RoundState

    rounds = list(campaign.rounds.order_by("index"))
    evals = Evaluation.objects.filter(campaign=campaign).order_by("round__index")
    versions = ModelVersion.objects.filter(campaign=campaign, kind=ModelKind.POLICY).order_by("id")
    return {
        "campaign": campaign.name,
        "rounds_done": sum(r.state == RoundState.DONE for r in rounds),
        "rounds_failed": [
            f"{r.index}: {r.failure_reason}" for r in rounds if r.state == RoundState.FAILED
        ],
        "evaluations": [
            {
                "round": ev.round.index,
                "labels": ev.labels_spent,
                "win_rate": ev.win_rate,
                "ci_low": ev.ci_low,
                "ci_high": ev.ci_high,
                "n_prompts": ev.n_prompts,
                "n_invalid": ev.n_invalid,
            }
            for ev in evals
        ],
        "policy_metrics": [v.metrics for v in versions if v.metrics],
        "seconds_this_invocation": round(seconds, 1),
    }


def write_outputs(results: dict, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_short.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| arm | labels | win rate vs initial policy [95% interval] |",
        "|---|---:|---|",
    ]
    for arm, r in results["arms"].items():
        for ev in r["evaluations"]:
            lines.append(
                f"| {arm} | {ev['labels']} | {ev['win_rate']:.3f} "
                f"[{ev['ci_low']:.3f}, {ev['ci_high']:.3f}] |"
            )
    (out / "lm_short.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency.lm",
        description="SmolLM2 + LoRA through the platform: infomax vs offline vs no nudge.",
    )
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--prompts-per-round", type=int, default=8, help="B (labels per round)")
    p.add_argument("--responses-per-prompt", type=int, default=4, help="K")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate")
    p.add_argument("--policy-steps", type=int, default=4, help="offline: policy steps at its refit")
    p.add_argument("--eval-prompts", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    p.add_argument("--work", type=Path, default=ROOT / "var/bench/lm_short")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/label_efficiency")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if args.rounds < 1 or args.eval_every < 1:
        p.error("--rounds and --eval-every must be at least 1")
    setup_platform_in(args.work)
    started = time.time()
    results = {
        "command": "python -m bench.label_efficiency.lm " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "setup": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "spec_example": campaign_spec(arms[0], args),
        "arms": {},
    }
    for arm in arms:
        results["arms"][arm] = run_arm(arm, args)
        write_outputs(results, args)  # after every arm: a partial run keeps what it has
    print(Path(args.out) / "lm_short.md")
    print((Path(args.out) / "lm_short.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
