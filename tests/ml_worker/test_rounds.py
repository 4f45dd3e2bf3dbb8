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


# --------------------------------------------------------------------------------------------
# A round's steps (the functions the round engine and the benchmark both call)
# --------------------------------------------------------------------------------------------


def _pool(P: int = 5, C: int = 6, D: int = 8, seed: int = 0, **kw):
    import torch

    from ml_worker.core.policies.pool import PoolPolicy

    g = torch.Generator().manual_seed(seed)
    features = torch.randn(P, C, D, generator=g)
    pool = [[f"answer {p}.{c}" for c in range(C)] for p in range(P)]
    return PoolPolicy(pool, features, [f"prompt {p}" for p in range(P)], **kw)


def _trainer(D: int = 8):
    from ml_worker.core.enn import ENNConfig, ENNTrainer

    return ENNTrainer(
        ENNConfig(
            feature_dim=D,
            num_particles=4,
            point_hidden=(8,),
            replay_size=32,
            replay_batch=4,
            refit_epochs=2,
            seed=1,
        )
    )


def test_round_prompts_are_the_seeded_draw_without_replacement_or_with_it_when_short():
    import random

    positions = rounds.round_prompts(7, 3, 10, 4)
    expected = random.Random(seeds.round_seed(7, 3, seeds.PROMPTS)).sample(range(10), 4)
    assert positions == expected and len(set(positions)) == 4
    assert rounds.round_prompts(7, 3, 10, 4) == positions  # reproducible
    assert rounds.round_prompts(7, 4, 10, 4) != positions  # another round, another draw
    short = rounds.round_prompts(7, 3, 2, 5)
    assert len(short) == 5 and set(short) <= {0, 1}
    with pytest.raises(ValueError, match="no training prompts"):
        rounds.round_prompts(7, 3, 0, 4)


def test_text_draws_see_and_update_what_the_pool_indices_do():
    """The platform's path (texts through a featurizer) and the benchmark's (candidate indices)
    give the same features and the same policy step for the same draw."""
    import torch

    from ml_worker.core.policies.pool import PoolFeaturizer

    text_policy, index_policy = _pool(), _pool()
    draws = rounds.TextDraws(text_policy, PoolFeaturizer(text_policy, "pool"), text_policy.prompts)
    feats = draws.sample([3, 1], 4, seed=11)
    assert feats.shape == (2, 4, 8)
    cand = index_policy.sample_indices(torch.tensor([3, 1]), 4, torch.Generator().manual_seed(11))
    torch.testing.assert_close(feats, index_policy.features[torch.tensor([[3], [1]]), cand])
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 3])
    signals = torch.tensor([0.3, -0.2, 0.1])
    draws.update(rows, cols, signals)
    index_policy.update_indices(torch.tensor([3, 1, 1]), cand[rows, cols], signals)
    torch.testing.assert_close(text_policy.theta, index_policy.theta)
    with pytest.raises(ValueError, match="no current draw"):
        rounds.TextDraws(text_policy, PoolFeaturizer(text_policy, "pool")).features()


def test_choose_pairs_never_asks_an_invalid_pair_and_is_seeded():
    import torch

    trainer = _trainer()
    features = torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(2))
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[:, 1] = False  # e.g. a repeat of another sample's text
    for rule in ("uniform", "infomax", "double_thompson"):
        sel = rounds.choose_pairs(trainer, features, rule, seed=5, round_index=0, valid=valid)
        again = rounds.choose_pairs(trainer, features, rule, seed=5, round_index=0, valid=valid)
        assert torch.equal(sel.pairs(), again.pairs())
        assert (sel.a != sel.b).all()
        assert not (sel.pairs() == 1).any()


def test_online_step_steps_the_reward_model_then_the_policy_on_the_labeled_prompts():
    import torch

    from ml_worker.core.policies.pool import PoolFeaturizer

    policy, trainer = _pool(), _trainer()
    draws = rounds.TextDraws(policy, PoolFeaturizer(policy, "p"), policy.prompts)
    features = draws.sample([0, 1, 2], 4, seed=3)
    labels = rounds.Labels(features[:2, 0], features[:2, 1], torch.tensor([1.0, 0.0]))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    labeled = torch.tensor([[0, 0, 1], [1, 0, 1]])
    r_metrics, p_metrics = rounds.online_step(trainer, draws, labels, features, labeled, nudge=0.1)
    assert r_metrics["labels"] == 2.0
    assert any(
        not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True)
    )
    assert policy.steps == 1 and p_metrics["n"] == 8.0  # 2 prompts x (pair, reverse, best/worst x2)
    # no labeled prompt this round: the policy does not move
    no_pairs = torch.zeros(0, 3, dtype=torch.long)
    _, p_metrics = rounds.online_step(trainer, draws, labels, features, no_pairs, nudge=0.1)
    assert p_metrics == {"skipped": 1.0} and policy.steps == 1


def test_refit_fits_the_reward_model_then_takes_one_policy_step_per_round_so_far():
    import torch

    from ml_worker.core.policies.pool import PoolFeaturizer

    policy, trainer = _pool(), _trainer()
    draws = rounds.TextDraws(policy, PoolFeaturizer(policy, "p"), policy.prompts)
    f = policy.features
    labels = rounds.Labels(f[:, 0], f[:, 1], torch.ones(5))
    beats = []
    r_metrics, p_metrics = rounds.refit(
        trainer,
        draws,
        labels,
        seed=1,
        round_index=2,
        n_prompts=5,
        batch=3,
        k=4,
        nudge=0.1,
        on_step=lambda: beats.append(1),
    )
    assert r_metrics["labels"] == 5.0 and policy.steps == 3 and len(beats) == 4
    assert p_metrics["n"] == 6.0  # 3 prompts x (best vs worst, worst vs best)
    assert rounds.Labels.cat([labels, labels]).targets.shape == (10,)
