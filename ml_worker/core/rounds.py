"""One round of the four algorithms, shared by the platform's round engine
(`rlhf_platform/rounds/`) and the label-efficiency benchmark's simulation
(`bench/label_efficiency/sim.py`): both call these functions, so both run the same algorithm
(`tests/bench/test_parity.py` checks that they give the same numbers from one seed).

A round: B training prompts (`round_prompts`), K samples of each from the sampling policy, one
pair per prompt chosen by the campaign's acquisition rule (`choose_pairs`), labels, then the
learning step the schedule calls for (`online_step` or `refit`). What is backend-specific, the
policy's texts or candidate indices, reaches the learning step through `Draws`.

**The schedule.** Rounds are counted from 0. A campaign of ``n`` rounds is one label budget:

- **offline** samples every round from the initial policy and learns once, at its last round:
  the reward model is refit from its initial weights on all labels, then a policy is optimized
  from its initial weights against that frozen reward model;
- **periodic** does the same refit every ``periodic_tau`` rounds (after rounds tau - 1,
  2 tau - 1, ...) and at its last round; each refit's policy samples the rounds that follow;
- **online** (uniform, information-directed or double Thompson sampling choice of pairs) takes
  one incremental reward-model step and one policy step every round.

A refit after round ``r`` optimizes the policy for ``r + 1`` steps, as many as online has taken
by then, so that every algorithm gets the same number of policy-gradient steps for the same
labels. Its prompts and samples draw from the round's seeds (`optimize_batches`).

No Django here; the schedule functions need no torch either.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ml_worker.core import seeds
from ml_worker.core.acquisition import Selection, select_pairs
from ml_worker.core.enn import ENNTrainer
from ml_worker.core.features import Featurizer
from ml_worker.core.learner import group_rewards
from ml_worker.core.policies.base import Policy
from ml_worker.core.update import reinforce_signals, unlabeled_signals

OFFLINE, PERIODIC, ONLINE = "offline", "periodic", "online"


# --------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------


def schedule_of(algorithm: str) -> str:
    """The schedule of a campaign's `algorithm` ("offline", "periodic"; every other
    algorithm, e.g. "online" or "infomax", learns online)."""
    return algorithm if algorithm in (OFFLINE, PERIODIC) else ONLINE


def refits(schedule: str, round_index: int, *, last: bool, periodic_tau: int) -> bool:
    """Whether the reward model and the policy are refit from scratch after `round_index`."""
    if schedule == OFFLINE:
        return last
    if schedule == PERIODIC:
        return last or switches_sampler(schedule, round_index, periodic_tau=periodic_tau)
    return False


def switches_sampler(schedule: str, round_index: int, *, periodic_tau: int) -> bool:
    """Whether the policy refit after `round_index` samples the next rounds, whatever the
    budget: periodic's refits every `periodic_tau` rounds (a last round's refit has no next
    round in its campaign; a longer campaign would not switch there)."""
    if periodic_tau < 1:
        raise ValueError("periodic_tau must be at least 1")
    return schedule == PERIODIC and (round_index + 1) % periodic_tau == 0


def refit_policy_steps(round_index: int, override: int | None = None) -> int:
    """Policy-optimization steps of a refit after `round_index`: one per round so far, as
    online takes (`override`, when given, instead: e.g. a quick test campaign)."""
    return override if override is not None else round_index + 1


def optimize_batches(
    seed: int, round_index: int, n_prompts: int, batch: int, steps: int
) -> Iterator[tuple[list[int], int]]:
    """The (prompt positions, sample seed) of each policy-optimization step of a refit after
    `round_index`: `batch` positions among the `n_prompts` training prompts (in their stored
    order), drawn with replacement, and the seed of the policy's samples for them."""
    rng = random.Random(seeds.round_seed(seed, round_index, seeds.OPTIMIZE))  # noqa: S311 (seeded, reproducible; no secret)
    for step in range(steps):
        positions = rng.choices(range(n_prompts), k=batch)
        yield positions, seeds.round_seed(seed, round_index, seeds.OPTIMIZE_SAMPLES + step)


# --------------------------------------------------------------------------------------------
# A round: its prompts, its pairs, its learning step
# --------------------------------------------------------------------------------------------


def round_prompts(seed: int, round_index: int, n_prompts: int, batch: int) -> list[int]:
    """Positions of the round's `batch` prompts among the `n_prompts` training prompts (in
    their stored order): without replacement, or with it when there are fewer than `batch`."""
    if n_prompts < 1:
        raise ValueError("the campaign has no training prompts")
    rng = random.Random(seeds.round_seed(seed, round_index, seeds.PROMPTS))  # noqa: S311 (seeded, reproducible; no secret)
    if batch <= n_prompts:
        return rng.sample(range(n_prompts), batch)
    return rng.choices(range(n_prompts), k=batch)


def choose_pairs(
    trainer: ENNTrainer,
    features: Tensor,
    rule: str,
    *,
    seed: int,
    round_index: int,
    valid: Tensor | None = None,
) -> Selection:
    """One pair per prompt by the acquisition `rule`, from the reward model's point and
    particle rewards of the round's samples (`features: [B, K, D]`), drawing from the round's
    SELECT seed; `valid: bool[B, K]` the samples that may be paired (a text repeated within
    its prompt's samples is offered once: never ask A vs A, `distinct_responses`)."""
    b, k = features.shape[0], features.shape[1]
    point, particles = group_rewards(trainer, features.reshape(b * k, -1), b, k)
    return select_pairs(
        rule,
        particle_rewards=particles,
        point_rewards=point,
        generator=torch.Generator().manual_seed(seeds.round_seed(seed, round_index, seeds.SELECT)),
        valid=valid,
    )


@dataclass(frozen=True)
class Labels:
    """Labeled pairs as the reward model learns from them: features of A and B (``[N, D]``),
    targets ``[N]`` (`Choice.target`: 1 A, 0 B, 0.5 tie) and optional per-label weights."""

    features_a: Tensor
    features_b: Tensor
    targets: Tensor
    weights: Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @classmethod
    def cat(cls, parts: Sequence[Labels]) -> Labels:
        """The labels of `parts`, in order (weighted only if every part is)."""
        weights = [p.weights for p in parts if p.weights is not None]
        return cls(
            torch.cat([p.features_a for p in parts]),
            torch.cat([p.features_b for p in parts]),
            torch.cat([p.targets for p in parts]),
            torch.cat(weights) if len(weights) == len(parts) else None,
        )


class Draws(Protocol):
    """The learning step's view of a policy and its samples, whatever the backend (texts and
    database rows on the platform, candidate indices in the benchmark). A *draw* is K samples
    for each of B prompts; rows index its prompts, columns its samples."""

    def sample(self, positions: list[int], k: int, seed: int) -> Tensor:
        """Make the policy's `k` samples (drawn from `seed`) of the training prompts at
        `positions` the current draw; return their features ``[B, K, D]``."""
        ...

    def update(self, rows: Tensor, cols: Tensor, signals: Tensor) -> dict[str, float]:
        """One REINFORCE step of the policy on samples of the current draw (all ``[N]``)."""
        ...


class TextDraws:
    """`Draws` over a text `Policy` and a `Featurizer`: the platform's (and any notebook's).
    `draw`, when given, is the current draw: the prompts and their K texts each."""

    def __init__(
        self,
        policy: Policy,
        featurizer: Featurizer,
        prompts: Sequence[str] = (),
        draw: tuple[list[str], list[list[str]]] | None = None,
    ) -> None:
        self.policy, self.featurizer, self.prompts = policy, featurizer, list(prompts)
        self.draw = draw

    def features(self) -> Tensor:
        """Features ``[B, K, D]`` of the current draw."""
        prompts, samples = self._current()
        flat_prompts = [p for p, group in zip(prompts, samples, strict=True) for _ in group]
        flat = [t for group in samples for t in group]
        return self.featurizer.embed(flat_prompts, flat).reshape(len(prompts), len(samples[0]), -1)

    def sample(self, positions: list[int], k: int, seed: int) -> Tensor:
        batch = [self.prompts[i] for i in positions]
        self.draw = (batch, self.policy.sample(batch, k, seed=seed))
        return self.features()

    def update(self, rows: Tensor, cols: Tensor, signals: Tensor) -> dict[str, float]:
        prompts, samples = self._current()
        r, c = rows.tolist(), cols.tolist()
        return self.policy.update(
            [prompts[i] for i in r], [samples[i][j] for i, j in zip(r, c, strict=True)], signals
        )

    def _current(self) -> tuple[list[str], list[list[str]]]:
        if self.draw is None:
            raise ValueError("no current draw: sample first")
        return self.draw


def online_step(
    trainer: ENNTrainer,
    policy: Draws,
    labels: Labels,
    features: Tensor,
    labeled: Tensor,
    *,
    nudge: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Online's learning step after a round: one incremental reward-model step on the round's
    `labels` (with replay), then one REINFORCE step of the policy on the round's draw
    (`features: [B, K, D]`, the policy's current draw). `labeled: long[N, 3]` holds, per
    labeled prompt, its row and the columns of its pair (a, b); the signals are the labeled
    pair and its reverse plus the updated reward model's best-vs-worst pair and its reverse,
    p(Y > Y') - 1/2 + `nudge`. Returns the reward model's and the policy's metrics."""
    reward_metrics: dict[str, float] = {"labels": float(len(labels))}
    if len(labels):
        reward_metrics |= trainer.step(
            labels.features_a, labels.features_b, labels.targets, label_weights=labels.weights
        )
    if len(labeled) == 0:
        return reward_metrics, {"skipped": 1.0}
    b, k = features.shape[0], features.shape[1]
    point, _ = group_rewards(trainer, features.reshape(b * k, -1), b, k)
    rows = labeled[:, 0]
    p_i, r_i, signals = reinforce_signals(point[rows], labeled[:, 1:], nudge)
    return reward_metrics, policy.update(rows[p_i], r_i, signals)


def refit(
    trainer: ENNTrainer,
    policy: Draws,
    labels: Labels,
    *,
    seed: int,
    round_index: int,
    n_prompts: int,
    batch: int,
    k: int,
    nudge: float,
    policy_steps: int | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Offline's and periodic's learning step after `round_index`: the reward model refit from
    its initial weights on all `labels`, then the fresh `policy` optimized against that frozen
    reward model (`optimize_policy`). `on_step` runs after the refit and after each policy
    step (the platform's heartbeat). Returns the reward model's and the policy's metrics."""
    reward_metrics: dict[str, float] = {"labels": float(len(labels))}
    if len(labels):
        reward_metrics |= trainer.refit(
            labels.features_a, labels.features_b, labels.targets, label_weights=labels.weights
        )
    on_step()
    policy_metrics = optimize_policy(
        trainer,
        policy,
        seed=seed,
        round_index=round_index,
        n_prompts=n_prompts,
        batch=batch,
        k=k,
        nudge=nudge,
        policy_steps=policy_steps,
        on_step=on_step,
    )
    return reward_metrics, policy_metrics


def optimize_policy(
    trainer: ENNTrainer,
    policy: Draws,
    *,
    seed: int,
    round_index: int,
    n_prompts: int,
    batch: int,
    k: int,
    nudge: float,
    policy_steps: int | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """The policy half of a refit after `round_index`: `refit_policy_steps` REINFORCE steps of
    `policy` against the frozen reward model, each on `batch` of the `n_prompts` training
    prompts and `k` samples each (`optimize_batches`), with the reward model's best-vs-worst
    pair and its reverse as signals (p(Y > Y') - 1/2 + `nudge`). Returns the last step's
    metrics."""
    metrics: dict[str, float] = {}
    steps = refit_policy_steps(round_index, policy_steps)
    for positions, sample_seed in optimize_batches(seed, round_index, n_prompts, batch, steps):
        features = policy.sample(positions, k, sample_seed)
        point, _ = group_rewards(trainer, features.reshape(batch * k, -1), batch, k)
        p_i, r_i, signals = unlabeled_signals(point, nudge)
        metrics = policy.update(p_i, r_i, signals)
        on_step()
    return metrics
