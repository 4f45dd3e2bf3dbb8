"""One seed of the raters benchmark, through the platform's services (needs Django and a
database; ``cli.py`` creates a throw-away one).

1. A campaign with overlap 2 (``labels_per_comparison=2``) holds random pairs of the
   environment's training prompts (``comparisons_import_pairs``) and gold pairs whose answer
   is the oracle's preference (the ``gold`` import field), mixed in at ``gold_rate``.
2. The 20 raters of ``crowd.py`` label in turns through ``comparison_next`` /
   ``label_submit`` (shown order, time taken), until the largest budget of training labels
   (gold labels are not training labels) is reached.
3. Every ``refit_every`` training labels the rater model is refit (``raters_refit``); the
   first refit that flags a rater records how many labels that rater had given.
4. At each budget: Spearman of the estimated against the true reliabilities, then three
   reward models fit from their initial weights on the training labels so far
   (``ENNTrainer.refit``): ``unweighted``; ``weighted`` (``label_weights``: each label's
   rater reliability); ``excluded`` (the raters flagged now are excluded with
   ``rater_exclusion_set`` and left out by ``left_out_q``, as training and exports do).
   Each is scored by its pairwise accuracy on every pair of the held-out prompts' candidates
   (the oracle's order), and by the win rate of a pool policy optimized against it.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bench.label_efficiency.env import PoolEnv
from bench.label_efficiency.sim import Hparams, IndexDraws, _new_policy
from ml_worker.core import rounds
from ml_worker.core.enn import CHOICE_TARGETS, ENNConfig, ENNTrainer
from ml_worker.core.evaluation import exact_pair_win_probs

from .crowd import BAD_KINDS, SimRater, answer, make_crowd, p_correct, seconds

MODES = ("unweighted", "weighted", "excluded")


@dataclass(frozen=True)
class BenchSetup:
    overlap: int = 2
    gold_pairs: int = 30
    gold_rate: float = 0.05
    refit_every: int = 100
    policy_steps: int = 40
    prompts_per_round: int = 32
    samples_per_prompt: int = 8
    reward: dict = field(
        default_factory=lambda: {
            "num_particles": 8,
            "prior_hidden": (16,),
            "diff_hidden": (32,),
            "point_hidden": (64, 64),
            "point_lr": 1e-3,
            "lr": 1e-3,
            "refit_epochs": 10,
            "refit_batch_size": 64,
        }
    )


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when undefined."""
    if len(x) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return None if vx == 0 or vy == 0 else cov / (vx * vy)


def heldout_pairs(env: PoolEnv, eval_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every pair of candidates of the held-out prompts that the oracle does not tie:
    (prompt, i, j) index tensors."""
    C = env.num_candidates
    i, j = torch.triu_indices(C, C, offset=1)
    p = eval_idx[:, None].expand(-1, len(i)).reshape(-1)
    ii, jj = i.repeat(len(eval_idx)), j.repeat(len(eval_idx))
    keep = env.rewards[p, ii] != env.rewards[p, jj]
    return p[keep], ii[keep], jj[keep]


def rm_accuracy(env: PoolEnv, trainer: ENNTrainer, pairs: tuple[Tensor, Tensor, Tensor]) -> float:
    p, i, j = pairs
    with torch.no_grad():
        ra = trainer.model.point(env.features[p, i])
        rb = trainer.model.point(env.features[p, j])
    truth = torch.sign(env.rewards[p, i] - env.rewards[p, j])
    model = torch.sign(ra - rb)
    return float(((model == truth).float() + 0.5 * (model == 0).float()).mean())


def run_seed(
    env: PoolEnv,
    *,
    seed: int,
    budgets: list[int],
    setup: BenchSetup | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    from rlhf_platform.accounts.models import Role, User
    from rlhf_platform.campaigns.services import (
        campaign_add_member,
        campaign_create,
        campaign_set_state,
        comparisons_import_pairs,
    )
    from rlhf_platform.labeling.models import Comparison, Label
    from rlhf_platform.labeling.services import NothingToLabel, comparison_next, label_submit
    from rlhf_platform.raters.models import GoldPair
    from rlhf_platform.raters.selectors import left_out_q
    from rlhf_platform.raters.services import (
        gold_rate_set,
        label_weights,
        rater_exclusion_set,
        raters_refit,
    )

    setup = setup or BenchSetup()
    budgets = sorted(set(budgets))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tag = uuid.uuid4().hex[:8]
    owner = User.objects.create_user(username=f"owner-{tag}", role=Role.RESEARCHER)
    campaign = campaign_create(
        owner=owner, name=f"raters bench {seed} {tag}", labels_per_comparison=setup.overlap
    )
    crowd = make_crowd()
    users = {}
    for r in crowd:
        users[r.name] = User.objects.create_user(username=f"{r.name}-{tag}")
        campaign_add_member(campaign=campaign, user=users[r.name])
    by_user = {users[r.name].pk: r for r in crowd}

    train_rows = env.split("train").tolist()
    eval_idx = env.split(env.eval_split)
    C = env.num_candidates

    def random_pair() -> tuple[int, int, int]:
        while True:
            p = rng.choice(train_rows)
            a, b = rng.sample(range(C), 2)
            if env.pool[p][a] != env.pool[p][b]:
                return p, a, b

    n_comparisons = budgets[-1] // setup.overlap + 8
    pairs = [random_pair() for _ in range(n_comparisons)]
    golds = []
    while len(golds) < setup.gold_pairs:
        p, a, b = random_pair()
        if env.rewards[p, a] != env.rewards[p, b]:
            golds.append((p, a, b))

    def row(p: int, a: int, b: int, **extra) -> dict[str, Any]:
        return {
            "prompt": env.prompts[p],
            "response_a": env.pool[p][a],
            "response_b": env.pool[p][b],
            **extra,
        }

    comparisons_import_pairs(campaign=campaign, pairs=[row(*t) for t in pairs])
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            row(p, a, b, gold="A" if env.rewards[p, a] > env.rewards[p, b] else "B")
            for p, a, b in golds
        ],
    )
    ids = list(
        Comparison.objects.filter(campaign=campaign).order_by("id").values_list("pk", flat=True)
    )
    where = dict(zip(ids, pairs + golds, strict=True))
    gold_ids = set(
        GoldPair.objects.filter(campaign=campaign).values_list("comparison_id", flat=True)
    )
    campaign_set_state(campaign=campaign, action="start")
    if setup.gold_rate:
        gold_rate_set(actor=owner, campaign=campaign, rate=setup.gold_rate)

    truth_sum: dict[str, float] = {r.name: 0.0 for r in crowd}
    n_labels: dict[str, int] = {r.name: 0 for r in crowd}
    first_flag: dict[str, dict[str, Any]] = {}
    train_labels = 0
    next_refit = setup.refit_every
    active = list(crowd)
    out_budgets = []
    pairs_eval = heldout_pairs(env, eval_idx)
    base_probs = _new_policy(env, Hparams()).probs(eval_idx)

    def refit_and_flag() -> dict[str, Any]:
        est = raters_refit(campaign_id=campaign.pk).estimates
        for key, e in est.items():
            r = by_user[int(key.split(":")[1])]
            if e["flags"] and r.name not in first_flag:
                first_flag[r.name] = {
                    "labels": e["n_labels"],
                    "flags": [f["code"] for f in e["flags"]],
                }
        return est

    def train(labels: list, weights: list[float] | None) -> ENNTrainer:
        kept = [(lab, i) for i, lab in enumerate(labels) if CHOICE_TARGETS[lab.choice] is not None]
        cfg = ENNConfig.from_dict(
            {**setup.reward, "feature_dim": env.features.shape[-1], "seed": seed}
        )
        trainer = ENNTrainer(cfg)
        if not kept:
            return trainer
        idx = [where[lab.comparison_id] for lab, _ in kept]
        p = torch.tensor([t[0] for t in idx])
        fa = env.features[p, torch.tensor([t[1] for t in idx])]
        fb = env.features[p, torch.tensor([t[2] for t in idx])]
        t = torch.tensor([CHOICE_TARGETS[lab.choice] for lab, _ in kept])
        w = None if weights is None else torch.tensor([weights[i] for _, i in kept])
        trainer.refit(fa, fb, t, label_weights=w)
        return trainer

    def evaluate(trainer: ENNTrainer) -> dict[str, float]:
        policy = _new_policy(env, Hparams())
        B = min(setup.prompts_per_round, len(train_rows))
        # An offline refit as the platform makes it: policy_steps steps (the refit after
        # round policy_steps - 1), on the prompts and samples of the campaign's seed.
        rounds.optimize_policy(
            trainer,
            IndexDraws(env, policy, list(train_rows)),
            seed=seed,
            round_index=setup.policy_steps - 1,
            n_prompts=len(train_rows),
            batch=B,
            k=setup.samples_per_prompt,
            nudge=Hparams().nudge,
        )
        win = exact_pair_win_probs(
            env.rewards[eval_idx], policy.probs(eval_idx), base_probs, temperature=env.temperature
        )
        return {"rm_accuracy": rm_accuracy(env, trainer, pairs_eval), "win_rate": float(win.mean())}

    k = 0
    while k < len(budgets) and active:
        rater: SimRater = rng.choice(active)
        user = users[rater.name]
        try:
            lease = comparison_next(annotator=user, campaign_id=campaign.pk, rng=rng).lease
        except NothingToLabel:
            active.remove(rater)
            continue
        p, a, b = where[lease.comparison_id]
        first, second = (b, a) if lease.swapped else (a, b)
        choice = answer(
            rater,
            r_first=float(env.rewards[p, first]),
            r_second=float(env.rewards[p, second]),
            len_first=len(env.pool[p][first]),
            len_second=len(env.pool[p][second]),
            temperature=env.temperature,
            rng=rng,
        )
        label_submit(
            annotator=user,
            lease_id=lease.pk,
            choice=choice,
            idempotency_key=f"bench-{lease.pk}",
            time_taken_ms=seconds(rater, rng),
        )
        ra, rb = float(env.rewards[p, a]), float(env.rewards[p, b])
        la, lb = len(env.pool[p][a]), len(env.pool[p][b])
        longer_good = 0.5 if la == lb or ra == rb else float((la > lb) == (ra > rb))
        truth_sum[rater.name] += p_correct(
            rater.kind, diff=abs(ra - rb), longer_is_better=longer_good, temperature=env.temperature
        )
        n_labels[rater.name] += 1
        if lease.comparison_id in gold_ids:
            continue
        train_labels += 1
        if train_labels >= next_refit:
            refit_and_flag()
            next_refit += setup.refit_every
        if train_labels < budgets[k]:
            continue
        est = refit_and_flag()
        true_rel = {
            n: max(0.0, 2 * truth_sum[n] / n_labels[n] - 1) for n in n_labels if n_labels[n]
        }
        est_rel = {by_user[int(key.split(":")[1])].name: e["reliability"] for key, e in est.items()}
        names = [n for n in true_rel if n in est_rel]
        rho = spearman([true_rel[n] for n in names], [est_rel[n] for n in names])
        flagged = sorted(
            by_user[int(key.split(":")[1])].name for key, e in est.items() if e["flags"]
        )
        everything = list(
            Label.objects.filter(campaign=campaign)
            .exclude(comparison_id__in=gold_ids)
            .order_by("id")
            .only("comparison_id", "choice", "annotator_id", "source", "judge_name")
        )
        for r in crowd:  # the flagged raters excluded now, the others included again
            if n_labels[r.name]:
                rater_exclusion_set(
                    actor=owner,
                    campaign=campaign,
                    rater=f"user:{users[r.name].pk}",
                    excluded=r.name in flagged,
                    reason="flagged by the rater model",
                )
        kept = list(
            Label.objects.filter(campaign=campaign)
            .exclude(left_out_q())
            .order_by("id")
            .only("comparison_id", "choice", "annotator_id", "source", "judge_name")
        )
        weights = label_weights(campaign_id=campaign.pk, labels=everything)
        modes = {
            "unweighted": evaluate(train(everything, None)),
            "weighted": evaluate(train(everything, weights)),
            "excluded": evaluate(train(kept, None)),
        }
        modes["excluded"]["labels_used"] = len(kept)
        out_budgets.append(
            {
                "labels": train_labels,
                "spearman": rho,
                "flagged": flagged,
                "modes": modes,
            }
        )
        if progress:
            progress(seed, train_labels, modes)
        k += 1

    final = raters_refit(campaign_id=campaign.pk).estimates
    raters = []
    for r in crowd:
        e = final.get(f"user:{users[r.name].pk}", {})
        raters.append(
            {
                "name": r.name,
                "kind": r.kind,
                "labels": n_labels[r.name],
                "true_reliability": (
                    max(0.0, 2 * truth_sum[r.name] / n_labels[r.name] - 1)
                    if n_labels[r.name]
                    else None
                ),
                "estimated_reliability": e.get("reliability"),
                "reliability_interval": e.get("reliability_interval"),
                "gold": [e.get("gold_correct"), e.get("n_gold")],
                "flags": [f["code"] for f in e.get("flags", [])],
                "first_flagged_at_labels": first_flag.get(r.name, {}).get("labels"),
                "first_flags": first_flag.get(r.name, {}).get("flags"),
                "bad": r.kind in BAD_KINDS,
            }
        )
    return {"seed": seed, "budgets": out_budgets, "raters": raters}
