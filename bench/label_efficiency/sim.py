"""The six algorithms of the label-efficiency benchmark, on a `PoolEnv`, in process.

Each run is a campaign of the platform's round engine, with `PoolPolicy` as the policy and the
oracle as the rater, on tensors instead of database rows: its rounds call the functions the
round engine calls (`ml_worker.core.rounds`: the round's prompts, the choice of pairs, the
online step and the refit), with `IndexDraws` giving them the policy's candidate indices where
the platform gives texts. What is left here is the driver: the loop over rounds to each label
budget, the oracle's labels and the evaluation.

- every round takes B prompts of the training split (without replacement within the round)
  and K samples per prompt from the *sampling policy*; one pair per prompt is chosen by the
  algorithm's acquisition rule (`rounds.choose_pairs`, never two identical texts) and labeled by the
  oracle: choice A with probability sigmoid((r_a - r_b) / T), each pair shown in a random
  order, as the platform's judge task does;
- every random choice of round r draws from the seed the round engine uses for it
  (`ml_worker.core.seeds`), so an online run reproduces, number for number, a platform
  campaign with the `pool` policy backend, the oracle judge and the same seed
  (`parity.py` runs both and compares);
- a label budget counts labels, not rounds: a round that would exceed the budget labels
  only its first `remaining` prompts;
- the schedule is the platform's (`ml_worker.core.rounds`), and each budget of the grid is
  evaluated as the end of a campaign of that budget:
- **offline**: the sampling policy is always the initial one; at each budget checkpoint the
  reward model is refit from its initial weights on all labels so far and a fresh policy is
  optimized against it (`unlabeled_signals`, best-vs-worst with the nudge);
- **periodic**: the same refit every `Setup.periodic_tau` rounds, whose policy then samples the
  next rounds, and at each budget checkpoint (evaluated; the sampler of the longer run does not
  change there unless the checkpoint falls on a period's end);
- **online** (with or without the nudge), **infomax** (information-directed) and **double_ts**
  (double Thompson sampling): one incremental reward-model step (`ENNTrainer.step`, with
  replay) and one REINFORCE policy step (`reinforce_signals`: labeled pair and its reverse,
  best-vs-worst and its reverse, signal p - 1/2 + nudge) per round.

Offline and periodic optimize the policy for as many steps as online takes rounds at that
budget (ceil(labels / B)), so every algorithm gets the same number of policy-gradient steps;
their prompts and samples draw from the seeds the platform's learning step uses.

Win rate: the exact expected probability that the policy's sample beats the initial policy's
sample under the oracle's Bradley-Terry model, averaged over the evaluation prompts
(`exact_pair_win_probs`); nothing is sampled. A run is a pure function of
(env, algorithm, hyper-parameters, budgets, seed, prompt splits).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ml_worker.core import rounds, seeds
from ml_worker.core.enn import ENNConfig, ENNTrainer
from ml_worker.core.evaluation import exact_pair_win_probs
from ml_worker.core.policies.pool import PoolPolicy

from .env import PoolEnv


@dataclass(frozen=True)
class Algorithm:
    name: str
    schedule: str  # ml_worker.core.rounds: OFFLINE | PERIODIC | ONLINE
    rule: str  # acquisition rule
    nudged: bool = True  # False: the nudge is held at 0 (the "tanking" ablation)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("offline", "offline", "uniform"),
        Algorithm("periodic", "periodic", "uniform"),
        Algorithm("online_no_nudge", "online", "uniform", nudged=False),
        Algorithm("online", "online", "uniform"),
        Algorithm("infomax", "online", "infomax"),
        Algorithm("double_ts", "online", "double_thompson"),
    )
}


@dataclass(frozen=True)
class Hparams:
    """What the tuning chooses per algorithm: the policy's learning rate and the nudge
    (for the no-nudge ablation, whose nudge is 0, the policy's KL coefficient instead)."""

    policy_lr: float = 0.03
    nudge: float = 0.1
    kl_coef: float = 0.1


@dataclass(frozen=True)
class Setup:
    """Fixed for all algorithms (documented with the results)."""

    prompts_per_round: int = 64  # B
    samples_per_prompt: int = 16  # K
    periodic_tau: int = 16  # periodic refits every tau rounds (PROTOCOL.md)
    reward: dict = field(
        default_factory=lambda: {
            # Narrower than the platform's defaults (a 48-candidate pool, not a 9B backbone),
            # so the point head's learning rate is the particles' (see ENNConfig.point_lr);
            # 4 Adam steps per online round against 10 epochs per offline refit.
            "num_particles": 32,
            "point_hidden": (256, 256),
            "point_lr": 1e-3,
            "gradient_steps": 4,
            "refit_epochs": 10,
            "replay_size": 4096,
            "replay_batch": 128,
        }
    )


def run(
    env: PoolEnv,
    algorithm: Algorithm,
    hp: Hparams,
    budgets: list[int],
    *,
    seed: int,
    train_idx: Tensor,
    eval_idx: Tensor,
    setup: Setup | None = None,
) -> list[dict]:
    """Win rate after each budget of `budgets` (labels): [{labels, rounds, win_rate}]."""
    setup = setup or Setup()
    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1:
        raise ValueError("budgets must be positive label counts")
    if len(train_idx) == 0 or len(eval_idx) == 0:
        raise ValueError("need training and evaluation prompts")
    B = min(setup.prompts_per_round, len(train_idx))
    K = setup.samples_per_prompt
    nudge = hp.nudge if algorithm.nudged else 0.0
    train_rows = train_idx.tolist()
    reward_cfg = ENNConfig.from_dict(
        {**setup.reward, "feature_dim": env.features.shape[-1], "seed": seed}
    )
    trainer = ENNTrainer(reward_cfg)
    initial = _new_policy(env, hp)
    base_probs = initial.probs(eval_idx)
    sampler = initial if algorithm.schedule != rounds.ONLINE else _new_policy(env, hp)
    policy = sampler
    collected: list[rounds.Labels] = []
    labels = rounds_done = 0
    refit_after = -1  # the round after which `policy` was refit (offline / periodic)

    def refit(round_index: int) -> PoolPolicy:
        """A refit after `round_index`, as the platform's learning step makes it."""
        fresh = _new_policy(env, hp)
        rounds.refit(
            trainer,
            IndexDraws(env, fresh, train_rows),
            rounds.Labels.cat(collected),
            seed=seed,
            round_index=round_index,
            n_prompts=len(train_rows),
            batch=B,
            k=K,
            nudge=nudge,
        )
        return fresh

    results = []
    for budget in budgets:
        while labels < budget:
            n = min(B, budget - labels)  # the budget may end in the middle of a round
            positions = rounds.round_prompts(seed, rounds_done, len(train_rows), B)
            draws = IndexDraws(env, sampler, train_rows)
            feats = draws.sample(positions, K, seeds.round_seed(seed, rounds_done, seeds.SAMPLES))
            prompt_idx, cand = draws.current()
            sel = rounds.choose_pairs(
                trainer,
                feats,
                algorithm.rule,
                seed=seed,
                round_index=rounds_done,
                valid=env.distinct(prompt_idx, cand),
            )
            rows = torch.arange(B)
            ca, cb = cand[rows, sel.a], cand[rows, sel.b]
            targets = judge_labels(env, prompt_idx, ca, cb, seed=seed, round_index=rounds_done)
            round_labels = rounds.Labels(
                feats[rows, sel.a][:n], feats[rows, sel.b][:n], targets[:n]
            )
            labels += n
            if algorithm.schedule == rounds.ONLINE:
                labeled = torch.stack([rows, sel.a, sel.b], dim=1)[:n]
                rounds.online_step(trainer, draws, round_labels, feats, labeled, nudge=nudge)
            else:
                collected.append(round_labels)
                if rounds.switches_sampler(
                    algorithm.schedule, rounds_done, periodic_tau=setup.periodic_tau
                ):
                    sampler = policy = refit(rounds_done)
                    refit_after = rounds_done
            rounds_done += 1
        if algorithm.schedule == rounds.ONLINE:
            policy = sampler
        elif refit_after != rounds_done - 1:
            # The budget's last round: a campaign of this budget refits here (its last round);
            # the sampler of a longer run does not change.
            policy = refit(rounds_done - 1)
            refit_after = rounds_done - 1
        win = exact_pair_win_probs(
            env.rewards[eval_idx], policy.probs(eval_idx), base_probs, temperature=env.temperature
        )
        results.append(
            {
                "labels": labels,
                "rounds": rounds_done,
                "win_rate": float(win.mean()),
                "rm_top_accuracy": top_candidate_accuracy(env, trainer, policy, train_idx),
            }
        )
    return results


class IndexDraws:
    """`rounds.Draws` over a `PoolPolicy`'s candidate indices: a draw is the prompts' rows of
    the pool (``[B]``) and the candidates sampled for each (``[B, K]``)."""

    def __init__(self, env: PoolEnv, policy: PoolPolicy, train_rows: list[int]) -> None:
        self.env, self.policy, self.train_rows = env, policy, train_rows
        self.draw: tuple[Tensor, Tensor] | None = None

    def sample(self, positions: list[int], k: int, seed: int) -> Tensor:
        prompt_idx = torch.tensor([self.train_rows[i] for i in positions])
        cand = self.policy.sample_indices(prompt_idx, k, torch.Generator().manual_seed(seed))
        self.draw = (prompt_idx, cand)
        return self.env.features[prompt_idx[:, None], cand]

    def current(self) -> tuple[Tensor, Tensor]:
        if self.draw is None:
            raise ValueError("no current draw: sample first")
        return self.draw

    def update(self, rows: Tensor, cols: Tensor, signals: Tensor) -> dict[str, float]:
        prompt_idx, cand = self.current()
        return self.policy.update_indices(prompt_idx[rows], cand[rows, cols], signals)


#: How many of the policy's most likely candidates per prompt `top_candidate_accuracy` pairs.
TOP_CANDIDATES = 4


def top_candidate_accuracy(
    env: PoolEnv, trainer: ENNTrainer, policy: PoolPolicy, prompt_idx: Tensor
) -> float:
    """The reward model's pairwise accuracy where it decides the policy's next step: on every
    pair among each prompt's `TOP_CANDIDATES` most likely candidates under the current policy,
    the share whose order by the reward model's point estimate matches the oracle's rewards
    (pairs the oracle ties are left out; a reward-model tie counts as half right)."""
    top = policy.probs(prompt_idx).topk(TOP_CANDIDATES, dim=-1).indices  # [N, k]
    with torch.no_grad():
        point = trainer.model.point(env.features[prompt_idx[:, None], top].flatten(0, 1))
    point = point.reshape(top.shape)
    truth = env.rewards[prompt_idx[:, None], top]
    i, j = torch.triu_indices(TOP_CANDIDATES, TOP_CANDIDATES, offset=1)
    true_sign = torch.sign(truth[:, i] - truth[:, j])
    model_sign = torch.sign(point[:, i] - point[:, j])
    scored = true_sign != 0
    right = (model_sign == true_sign).float() + 0.5 * (model_sign == 0).float()
    return float(right[scored].mean()) if scored.any() else float("nan")


def judge_labels(
    env: PoolEnv, prompt_idx: Tensor, a: Tensor, b: Tensor, *, seed: int, round_index: int
) -> Tensor:
    """The oracle's Bradley-Terry choices on a round's pairs, as the platform's judge task
    makes them (`round_judge` with `OracleJudge.judge`): each pair shown in a random order
    (JUDGE_SWAPS), then a draw per pair from the judge's seed of its batch of JUDGE_BATCH.
    Returns the targets [N] in the pairs' own order: 1.0 when A is preferred, 0.0 when B,
    0.5 for a tie (at temperature 0, equal rewards)."""
    swap_rng = random.Random(seeds.round_seed(seed, round_index, seeds.JUDGE_SWAPS))  # noqa: S311
    targets = []
    for start in range(0, len(a), seeds.JUDGE_BATCH):
        p = prompt_idx[start : start + seeds.JUDGE_BATCH]
        ca, cb = a[start : start + seeds.JUDGE_BATCH], b[start : start + seeds.JUDGE_BATCH]
        swap = torch.tensor([swap_rng.random() < 0.5 for _ in range(len(p))])
        shown_a, shown_b = torch.where(swap, cb, ca), torch.where(swap, ca, cb)
        diff = env.rewards[p, shown_a] - env.rewards[p, shown_b]
        if env.temperature == 0:
            prob = (torch.sign(diff) + 1.0) / 2.0
        else:
            prob = torch.sigmoid(diff / env.temperature)
        gen = torch.Generator().manual_seed(seeds.judge_seed(seed, round_index, start) % 2**64)
        shown_a_wins = (torch.rand(len(p), generator=gen) < prob).float()
        target = torch.where(swap, 1.0 - shown_a_wins, shown_a_wins)
        targets.append(torch.where(prob == 0.5, 0.5, target) if env.temperature == 0 else target)
    return torch.cat(targets)


def _new_policy(env: PoolEnv, hp: Hparams) -> PoolPolicy:
    return PoolPolicy(
        env.pool,
        env.features,
        env.prompts,
        lr=hp.policy_lr,
        kl_coef=hp.kl_coef,
        base_logits=env.base_logits,
        per_prompt=env.per_prompt,
    )
