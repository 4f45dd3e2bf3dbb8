"""The round schedule: which algorithm learns what in which round, shared by the platform's
round engine (`rlhf_platform/rounds/services.py`) and the label-efficiency benchmark's
simulation (`bench/label_efficiency/sim.py`), so that both run the same algorithm.

Rounds are counted from 0. A campaign of ``n`` rounds is one label budget:

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

Pure Python: no torch, no Django.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ml_worker.core import seeds

OFFLINE, PERIODIC, ONLINE = "offline", "periodic", "online"


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
