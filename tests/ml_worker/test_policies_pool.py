from __future__ import annotations

import pytest
import torch

from ml_worker.core.policies.base import Policy
from ml_worker.core.policies.pool import PoolPolicy


def _policy(P: int = 4, C: int = 6, D: int = 8, seed: int = 0, **kw) -> PoolPolicy:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(P, C, D, generator=g)
    prompts = [f"prompt {p}" for p in range(P)]
    pool = [[f"answer {p}.{c}" for c in range(C)] for p in range(P)]
    return PoolPolicy(pool, features, prompts, **kw)


def _perturbed(policy: PoolPolicy, scale: float = 1.0, seed: int = 1) -> PoolPolicy:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        policy.theta.add_(scale * torch.randn(policy.theta.shape, generator=g))
    return policy


def test_it_implements_the_policy_protocol_and_starts_uniform():
    policy = _policy()
    assert isinstance(policy, Policy)
    torch.testing.assert_close(policy.probs(torch.arange(4)), torch.full((4, 6), 1 / 6))


def test_base_logits_set_the_initial_distribution():
    base = torch.log_softmax(torch.randn(4, 6), dim=-1)
    policy = _policy(base_logits=base)
    torch.testing.assert_close(policy.probs(torch.arange(4)), base.exp())


def test_a_step_raises_positively_and_lowers_negatively_signaled_responses():
    policy = _policy(kl_coef=0.0, optimizer="sgd", lr=0.5)
    prompts = ["prompt 0", "prompt 0", "prompt 2", "prompt 2"]
    responses = ["answer 0.1", "answer 0.4", "answer 2.3", "answer 2.5"]
    signals = torch.tensor([0.4, -0.4, 0.3, -0.3])
    before = policy.log_probs(prompts, responses)
    for _ in range(5):
        policy.update(prompts, responses, signals)
    after = policy.log_probs(prompts, responses)
    assert (after[[0, 2]] > before[[0, 2]]).all()
    assert (after[[1, 3]] < before[[1, 3]]).all()


def test_the_nudge_raises_the_likelihood_of_the_sampled_responses():
    # Antisymmetric signals (a pair and its reverse, equal rewards) move nothing; the nudge
    # alone then raises the sampled responses' log-probabilities.
    prompts, responses = ["prompt 1", "prompt 1"], ["answer 1.0", "answer 1.2"]
    flat = _policy(kl_coef=0.0, optimizer="sgd", lr=0.5)
    flat.update(prompts, responses, torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(flat.theta.detach(), torch.zeros(8))
    nudged = _policy(kl_coef=0.0, optimizer="sgd", lr=0.5)
    before = nudged.log_probs(prompts, responses).sum()
    nudged.update(prompts, responses, torch.tensor([0.05, 0.05]))
    assert nudged.log_probs(prompts, responses).sum() > before


def test_kl_steps_pull_the_policy_toward_its_moving_average():
    policy = _perturbed(_policy(kl_coef=1.0, ema_decay=1.0, lr=0.05))
    idx = torch.arange(4)
    kl0 = policy.kl_to_anchor(idx).mean()
    dist0 = (policy.theta - policy.theta_ema).norm()
    assert kl0 > 1e-3
    for _ in range(20):
        policy.update_indices(torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]))
    assert policy.kl_to_anchor(idx).mean() < 0.5 * kl0
    assert (policy.theta - policy.theta_ema).norm() < dist0


def test_the_anchor_is_an_exponential_moving_average_of_theta():
    policy = _policy(ema_decay=0.9, lr=0.1)
    policy.update(["prompt 0"], ["answer 0.0"], torch.tensor([1.0]))
    torch.testing.assert_close(policy.theta_ema, 0.1 * policy.theta.detach())
    prev_ema = policy.theta_ema.clone()
    policy.update(["prompt 0"], ["answer 0.0"], torch.tensor([1.0]))
    torch.testing.assert_close(policy.theta_ema, 0.9 * prev_ema + 0.1 * policy.theta.detach())


def test_gradient_clipping_bounds_the_step():
    policy = _policy(kl_coef=0.0, optimizer="sgd", lr=1.0, grad_clip=0.01)
    metrics = policy.update(["prompt 0"], ["answer 0.0"], torch.tensor([100.0]))
    assert metrics["grad_norm"] > 0.01
    assert policy.theta.detach().norm() <= 0.01 + 1e-6


def test_sampling_frequencies_match_probabilities():
    policy = _perturbed(_policy(P=3, C=5))
    idx = torch.arange(3)
    n = 40_000
    draws = policy.sample_indices(idx, n, torch.Generator().manual_seed(0))
    freq = torch.nn.functional.one_hot(draws, 5).float().mean(dim=1)
    probs = policy.probs(idx)
    # 5 standard errors of a binomial proportion, per cell.
    tol = 5 * (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= tol + 1e-4).all()


def test_seeded_sampling_is_reproducible_and_returns_pool_texts():
    policy = _perturbed(_policy())
    prompts = ["prompt 3", "prompt 0"]
    a = policy.sample(prompts, 7, seed=11)
    assert a == policy.sample(prompts, 7, seed=11)
    assert a != policy.sample(prompts, 7, seed=12)
    assert all(r.startswith("answer 3.") for r in a[0]) and len(a[1]) == 7


def test_expectations_are_exact_and_greedy_is_the_argmax():
    policy = _perturbed(_policy())
    idx = torch.tensor([2, 0, 2])
    values = torch.randn(3, 6)
    probs = policy.probs(idx)
    torch.testing.assert_close(policy.expected(idx, values), (probs * values).sum(-1))
    onehot = torch.zeros(3, 6)
    onehot[torch.arange(3), probs.argmax(-1)] = 1.0
    assert (policy.expected(idx, onehot) == probs.max(-1).values).all()
    assert policy.greedy(["prompt 2"]) == [f"answer 2.{int(probs[0].argmax())}"]


def test_ragged_pools_give_zero_probability_to_missing_candidates():
    features = torch.randn(2, 3, 4)
    policy = PoolPolicy([["a", "b", "c"], ["d"]], features, ["p", "q"])
    probs = policy.probs(torch.tensor([0, 1]))
    torch.testing.assert_close(probs[1], torch.tensor([1.0, 0.0, 0.0]))
    assert policy.sample(["q"], 5, seed=0) == [["d"] * 5]
    with pytest.raises(ValueError):
        policy.update_indices(torch.tensor([1]), torch.tensor([2]), torch.tensor([1.0]))


def test_save_load_round_trip_gives_identical_outputs_and_training(tmp_path):
    policy = _policy()
    for step in range(3):
        policy.update(
            ["prompt 1", "prompt 2"], ["answer 1.1", "answer 2.4"], torch.tensor([0.3, -0.2 + step])
        )
    policy.save(tmp_path / "v1")
    loaded = PoolPolicy.load(tmp_path / "v1")
    idx = torch.arange(4)
    assert torch.equal(loaded.probs(idx), policy.probs(idx))
    assert loaded.greedy(policy.prompts) == policy.greedy(policy.prompts)
    assert loaded.sample(policy.prompts, 3, seed=5) == policy.sample(policy.prompts, 3, seed=5)
    # The optimizer state and anchor travel too: the next step is identical.
    args = (["prompt 3"], ["answer 3.3"], torch.tensor([0.5]))
    assert loaded.update(*args) == policy.update(*args)
    assert torch.equal(loaded.theta, policy.theta)

    policy.save(tmp_path / "slim", include_pool=False)
    slim = PoolPolicy.load(tmp_path / "slim", pool_from=policy)
    assert torch.equal(slim.probs(idx), policy.probs(idx))
    with pytest.raises(ValueError):
        PoolPolicy.load(tmp_path / "slim")


def test_it_rejects_unknown_prompts_and_responses():
    policy = _policy()
    with pytest.raises(ValueError, match="prompt not in this pool"):
        policy.log_probs(["nope"], ["answer 0.0"])
    with pytest.raises(ValueError, match="response not in"):
        policy.log_probs(["prompt 0"], ["answer 1.0"])


def test_a_policy_made_with_save_pool_false_saves_slim_versions_and_keeps_saving_them(tmp_path):
    pool = _policy()
    slim = PoolPolicy(pool.pool, pool.features, pool.prompts, save_pool=False)
    slim.save(tmp_path / "v0")
    assert not (tmp_path / "v0" / "pool.json").exists()
    loaded = PoolPolicy.load(tmp_path / "v0", pool_from=pool)
    loaded.save(tmp_path / "v1")  # a version loaded slim is saved slim again
    assert not (tmp_path / "v1" / "pool.json").exists()


def test_the_pool_featurizer_returns_the_pools_features_by_text():
    from ml_worker.core.policies.pool import PoolFeaturizer

    pool = _policy(D=5)
    feats = PoolFeaturizer(pool, "pool:test").embed(
        ["prompt 2", "prompt 0", "prompt 2"], ["answer 2.3", "answer 0.0", "answer 2.3"]
    )
    assert torch.equal(feats, pool.features[[2, 0, 2], [3, 0, 3]])
    with pytest.raises(ValueError, match="response not in"):
        PoolFeaturizer(pool, "pool:test").embed(["prompt 1"], ["answer 2.3"])


def test_per_prompt_offsets_let_it_prefer_a_candidate_the_features_cannot_single_out(tmp_path):
    """All candidates share one feature vector: the shared theta cannot tell them apart, the
    per-prompt offset can; the offset and its optimizer state survive a save and a load."""
    P, C = 2, 4
    features = torch.ones(P, C, 3)
    pool = [[f"a{p}.{c}" for c in range(C)] for p in range(P)]
    prompts = ["p0", "p1"]
    shared = PoolPolicy(pool, features, prompts, lr=0.1)
    offset = PoolPolicy(pool, features, prompts, lr=0.1, per_prompt=True)
    for policy in (shared, offset):
        for _ in range(20):
            policy.update(["p0"], ["a0.2"], torch.tensor([1.0]))
    idx = torch.arange(P)
    assert torch.allclose(shared.probs(idx), torch.full((P, C), 1 / C))  # no capacity
    probs = offset.probs(idx)
    assert probs[0, 2] > 0.5 and probs[0].argmax() == 2
    assert torch.allclose(probs[1], torch.full((C,), 1 / C))  # other prompts untouched

    offset.save(tmp_path / "v")
    loaded = PoolPolicy.load(tmp_path / "v")
    assert loaded.per_prompt and torch.equal(loaded.probs(idx), probs)
    args = (["p1"], ["a1.0"], torch.tensor([0.5]))
    assert loaded.update(*args) == offset.update(*args)
    assert torch.equal(loaded.offset, offset.offset)


def test_copies_of_a_text_share_their_offset_so_an_update_by_text_is_an_update_by_index():
    """The platform updates by text, the benchmark by the sampled index: with duplicate texts
    both must move the policy the same way."""
    features = torch.ones(1, 3, 2)
    pool = [["same", "other", "same"]]
    by_index = PoolPolicy(pool, features, ["p"], lr=0.1, per_prompt=True)
    by_text = PoolPolicy(pool, features, ["p"], lr=0.1, per_prompt=True)
    by_index.update_indices(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]))
    by_text.update(["p"], ["same"], torch.tensor([1.0]))  # maps to one of the copies
    idx = torch.tensor([0])
    assert torch.allclose(by_index.probs(idx), by_text.probs(idx))
    probs = by_index.probs(idx)[0]
    assert probs[0] == probs[2] and probs[0] > probs[1]
