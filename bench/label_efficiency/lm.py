"""The real LM, briefly: SmolLM2-135M-Instruct with LoRA updates, run as platform campaigns.

    .venv/bin/python -m bench.label_efficiency.lm                 # 3 arms x 8 rounds (CPU)
    .venv/bin/python -m bench.label_efficiency.lm --rounds 2 --eval-every 1   # a smoke run
    .venv/bin/python -m bench.label_efficiency.lm --paper         # B = 64, K = 16, 4,096 labels

Sizes come from flags; ``--paper`` sets the paper's (B = 64 prompts per round, K = 16 samples per
prompt, 64 rounds: 4,096 labels per arm, evaluation every 8 rounds on 64 prompts), each
overridable (``--paper --rounds 128``). The LM runs on CUDA when one is present
(``RLHF_DEVICE`` chooses otherwise, e.g. ``RLHF_DEVICE=cpu``); the results name the device.

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

"Tanking" (the paper's collapse without the nudge) is read off two things per arm: the win rate
against the initial policy falling significantly below 1/2 (the last evaluation's 95% interval
entirely below 0.5), and the policy's own samples degenerating (per round: mean length in
tokens and the share of distinct texts among a round's samples, `sample_health`).

State lives in a SQLite database and artifacts under ``--work`` (default var/bench/lm_short,
with ``--paper`` var/bench/lm_paper): an interrupted run resumes where it stopped. Results:
``--out``/lm_short.json and .md (with ``--paper``: lm_paper.json and .md, so that a paper-size
run does not overwrite the CPU form's).
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

SMALL_SIZES = {
    "rounds": 8,
    "prompts_per_round": 8,
    "responses_per_prompt": 4,
    "eval_prompts": 16,
    "eval_every": 4,
}
PAPER_SIZES = {
    "rounds": 64,
    "prompts_per_round": 64,
    "responses_per_prompt": 16,
    "eval_prompts": 64,
    "eval_every": 8,
}

ARMS = {
    "infomax": {"algorithm": "infomax", "acquisition_rule": "infomax", "nudge": 0.1},
    "offline": {"algorithm": "offline", "acquisition_rule": "uniform", "nudge": 0.1},
    "infomax_no_nudge": {"algorithm": "infomax", "acquisition_rule": "infomax", "nudge": 0.0},
}


def campaign_spec(arm: str, args: argparse.Namespace) -> dict:
    """The platform campaign spec of one arm (docs/campaigns.md): only the arm's keys differ."""
    a = ARMS[arm]
    # policy_steps: only when given (the platform's default is one step per round so far)
    steps = {} if args.policy_steps is None else {"policy_steps": args.policy_steps}
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
            "backend": args.backend,
            "models_dir": str(ROOT / "var/models"),
            "max_new_tokens": args.max_new_tokens,
            "top_k": 50,
            "temperature": 1.0,
            "lr": args.lr,
            "nudge": a["nudge"],
            "eval_prompts": args.eval_prompts,
            "seed": args.seed,
        }
        | steps,
        "reward_config": {"num_particles": 32},
        "judge_config": {"kind": "oracle", "temperature": 1.0, "encoder": args.judge_encoder},
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

    from rlhf_platform.rounds.models import Evaluation, RoundState
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


def sample_health(campaign) -> list[dict]:
    """Per round: the policy samples' mean length in tokens and share of distinct texts (a
    collapsing policy repeats itself or shrinks to nothing)."""
    out = []
    for rnd in campaign.rounds.order_by("index"):
        texts = list(rnd.responses.values_list("text", "token_count"))
        if texts:
            out.append(
                {
                    "round": rnd.index,
                    "mean_tokens": round(sum(n for _, n in texts) / len(texts), 2),
                    "distinct_share": round(len({t for t, _ in texts}) / len(texts), 3),
                }
            )
    return out


def tanked(summary: dict) -> bool:
    """Whether the arm collapsed: its last evaluation's interval lies entirely below 1/2."""
    evals = summary["evaluations"]
    return bool(evals) and evals[-1]["ci_high"] < 0.5


def device_name() -> str:
    """The device the LM runs on (`ml_worker.core.policies.lm.default_device`), in words."""
    import torch

    from ml_worker.core.policies.lm import default_device

    device = default_device()
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()} cores"


def summarize(campaign, seconds: float) -> dict:
    from rlhf_platform.rounds.models import Evaluation, ModelKind, ModelVersion, RoundState

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
        "samples": sample_health(campaign),
        "seconds_this_invocation": round(seconds, 1),
    }


def write_outputs(results: dict, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"Device: {results['device']}; B = {results['setup']['prompts_per_round']}, "
        f"K = {results['setup']['responses_per_prompt']}, "
        f"{results['setup']['rounds']} rounds per arm.",
        "",
        "| arm | nudge | labels | win rate vs initial policy [95% interval] | tanked |",
        "|---|---:|---:|---|---|",
    ]
    for arm, r in results["arms"].items():
        for ev in r["evaluations"]:
            lines.append(
                f"| {arm} | {ARMS[arm]['nudge']} | {ev['labels']} | {ev['win_rate']:.3f} "
                f"[{ev['ci_low']:.3f}, {ev['ci_high']:.3f}] | {'yes' if tanked(r) else 'no'} |"
            )
    lines += ["", "| arm | round | mean tokens | distinct share |", "|---|---:|---:|---:|"]
    for arm, r in results["arms"].items():
        for row in r["samples"]:
            lines.append(
                f"| {arm} | {row['round']} | {row['mean_tokens']} | {row['distinct_share']} |"
            )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `--paper` or the small sizes filling what was not given."""
    p = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency.lm",
        description="SmolLM2 + LoRA through the platform: infomax vs offline vs no nudge.",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's sizes: B 64, K 16, 64 rounds (4,096 labels), eval every 8 on 64 prompts",
    )
    p.add_argument("--rounds", type=int, help="rounds per arm (default 8; --paper 64)")
    p.add_argument("--prompts-per-round", type=int, help="B, labels per round (8; --paper 64)")
    p.add_argument("--responses-per-prompt", type=int, help="K (4; --paper 16)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument(
        "--backend",
        choices=("smollm2", "tiny"),
        default="smollm2",
        help="the policy LM: SmolLM2-135M-Instruct, or a tiny random LM (smoke tests only)",
    )
    p.add_argument(
        "--judge-encoder",
        choices=("minilm", "hashing"),
        default="minilm",
        help="the oracle's text encoder (hashing: no model, smoke tests only)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate")
    p.add_argument(
        "--policy-steps",
        type=int,
        default=None,
        help="offline: policy steps at its refit (default: one per round, as online takes)",
    )
    p.add_argument("--eval-prompts", type=int, help="evaluation prompts (16; --paper 64)")
    p.add_argument("--eval-every", type=int, help="rounds between evaluations (4; --paper 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    p.add_argument("--work", type=Path, help="state folder (var/bench/lm_short or lm_paper)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/label_efficiency")
    args = p.parse_args(argv)
    sizes = PAPER_SIZES if args.paper else SMALL_SIZES
    args.name = "lm_paper" if args.paper else "lm_short"
    if args.work is None:
        args.work = ROOT / "var/bench" / args.name
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if min(args.rounds, args.eval_every, args.prompts_per_round, args.responses_per_prompt) < 1:
        p.error("--rounds, --eval-every, --prompts-per-round, --responses-per-prompt: at least 1")
    if args.responses_per_prompt < 2:
        p.error("--responses-per-prompt must be at least 2 (a pair per prompt)")
    args.arm_list = arms
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arms = args.arm_list
    setup_platform_in(args.work)
    started = time.time()
    results = {
        "command": "python -m bench.label_efficiency.lm " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "device": device_name(),
        "setup": {
            k: v for k, v in vars(args).items() if k not in ("work", "out", "arm_list", "name")
        },
        "spec_example": campaign_spec(arms[0], args),
        "arms": {},
    }
    print(
        f"{len(arms)} arm(s) x {args.rounds} rounds x {args.prompts_per_round} labels on "
        f"{results['device']}",
        flush=True,
    )
    for arm in arms:
        results["arms"][arm] = run_arm(arm, args)
        results["arms"][arm]["tanked"] = tanked(results["arms"][arm])
        write_outputs(results, args)  # after every arm: a partial run keeps what it has
    print(Path(args.out) / f"{args.name}.md")
    print((Path(args.out) / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
