"""The round schedule shared by the platform's round engine and the benchmark's simulation."""

import pytest

from ml_worker.core import rounds, seeds
from ml_worker.core.learner import LearnerConfigError, PolicySpec


def _refit_rounds(schedule: str, n: int, tau: int) -> list[int]:
    return [r for r in range(n) if rounds.refits(schedule, r, last=r == n - 1, periodic_tau=tau)]


def test_offline_refits_once_at_its_last_round_and_online_never():
    assert _refit_rounds(rounds.OFFLINE, 7, tau=3) == [6]
    assert _refit_rounds(rounds.ONLINE, 7, tau=3) == []


def test_periodic_refits_every_tau_rounds_and_at_its_last():
    assert _refit_rounds(rounds.PERIODIC, 7, tau=3) == [2, 5, 6]
    assert _refit_rounds(rounds.PERIODIC, 6, tau=3) == [2, 5]
    # only the period's refits change the sampler of later rounds
    switching = [r for r in range(7) if rounds.switches_sampler(rounds.PERIODIC, r, periodic_tau=3)]
    assert switching == [2, 5]
    assert not rounds.switches_sampler(rounds.OFFLINE, 2, periodic_tau=3)
    with pytest.raises(ValueError):
        rounds.switches_sampler(rounds.PERIODIC, 0, periodic_tau=0)


@pytest.mark.parametrize(
    ("algorithm", "schedule"),
    [("offline", "offline"), ("periodic", "periodic"), ("online", "online"), ("infomax", "online")],
)
def test_every_platform_algorithm_has_a_schedule(algorithm, schedule):
    assert rounds.schedule_of(algorithm) == schedule


def test_a_refit_takes_one_policy_step_per_round_so_far_unless_overridden():
    assert rounds.refit_policy_steps(0) == 1
    assert rounds.refit_policy_steps(9) == 10
    assert rounds.refit_policy_steps(9, override=2) == 2


def test_optimize_batches_are_reproducible_per_round_and_differ_between_rounds():
    first = list(rounds.optimize_batches(seed=3, round_index=4, n_prompts=10, batch=6, steps=5))
    assert first == list(rounds.optimize_batches(3, 4, 10, 6, 5))
    assert first != list(rounds.optimize_batches(3, 5, 10, 6, 5))
    assert len(first) == 5
    assert all(len(pos) == 6 and all(0 <= i < 10 for i in pos) for pos, _ in first)
    sample_seeds = [s for _, s in first]
    assert len(set(sample_seeds)) == 5
    assert sample_seeds[0] == seeds.round_seed(3, 4, seeds.OPTIMIZE_SAMPLES)


def test_policy_steps_is_optional_and_must_be_a_positive_integer():
    assert PolicySpec.from_config({"backend": "tiny"}).policy_steps is None
    assert PolicySpec.from_config({"backend": "tiny", "policy_steps": 2}).policy_steps == 2
    for bad in (0, -1, "4", 1.5, True):
        with pytest.raises(LearnerConfigError, match="policy_steps"):
            PolicySpec.from_config({"backend": "tiny", "policy_steps": bad})
