from __future__ import annotations

import torch

from ml_worker.core.update import (
    best_worst,
    reinforce_signals,
    unlabeled_signals,
)


def _rewards(B: int = 6, K: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, K, generator=torch.Generator().manual_seed(seed))


def _pairs(B: int, K: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, K, (B,), generator=g)
    b = (a + 1 + torch.randint(0, K - 1, (B,), generator=g)) % K
    return torch.stack([a, b], dim=1)


def test_it_computes_the_paper_signal_for_the_labeled_pair_and_its_reverse():
    r = torch.tensor([[0.0, 2.0, -1.0]])
    p_idx, y_idx, s = reinforce_signals(r, torch.tensor([[1, 2]]), nudge=0.05)
    # labeled 1 vs 2, reverse, best (1) vs worst (2), reverse
    assert p_idx.tolist() == [0, 0, 0, 0]
    assert y_idx.tolist() == [1, 2, 1, 2]
    p = torch.sigmoid(torch.tensor(3.0))
    expected = torch.stack([p - 0.5 + 0.05, (1 - p) - 0.5 + 0.05] * 2)
    torch.testing.assert_close(s, expected)


def test_it_returns_four_entries_per_prompt_grouped_by_prompt():
    B, K = 7, 4
    p_idx, y_idx, s = reinforce_signals(_rewards(B, K), _pairs(B, K), nudge=0.0)
    assert p_idx.shape == y_idx.shape == s.shape == (4 * B,)
    assert p_idx.tolist() == [b for b in range(B) for _ in range(4)]
    assert ((y_idx >= 0) & (y_idx < K)).all()


def test_it_shifts_every_signal_by_exactly_the_nudge():
    r, pairs = _rewards(), _pairs(6, 5)
    _, y0, s0 = reinforce_signals(r, pairs, nudge=0.0)
    _, y1, s1 = reinforce_signals(r, pairs, nudge=0.1)
    assert torch.equal(y0, y1)
    torch.testing.assert_close(s1 - s0, torch.full_like(s0, 0.1))
    # Without the nudge each pair and its reverse cancel, so the mean signal is 0 and the
    # nudge makes it exactly epsilon: it does not cancel the way a reward offset does.
    torch.testing.assert_close(s0.mean(), torch.tensor(0.0), atol=1e-7, rtol=0)
    torch.testing.assert_close(s1.mean(), torch.tensor(0.1), atol=1e-7, rtol=0)


def test_a_constant_added_to_rewards_cancels_but_the_nudge_does_not():
    r, pairs = _rewards(), _pairs(6, 5)
    _, _, s = reinforce_signals(r, pairs, nudge=0.0)
    _, _, s_offset = reinforce_signals(r + 3.0, pairs, nudge=0.0)
    torch.testing.assert_close(s_offset, s, atol=1e-6, rtol=0)
    _, _, s_nudged = reinforce_signals(r + 3.0, pairs, nudge=0.2)
    assert (s_nudged - s).min() > 0.19


def test_it_signals_the_better_response_positively_without_nudge():
    r = _rewards(20, 6, seed=3)
    pairs = _pairs(20, 6, seed=4)
    p_idx, y_idx, s = reinforce_signals(r, pairs, nudge=0.0, include_best_worst=False)
    other = pairs.flip(1).reshape(-1)
    better = r[p_idx, y_idx] > r[p_idx, other]
    assert torch.equal(s > 0, better)


def test_best_worst_picks_extremes_and_stays_distinct_under_ties():
    r = torch.tensor([[0.1, 0.9, -0.3, 0.2], [1.0, 1.0, 1.0, 1.0]])
    best, worst = best_worst(r)
    assert best.tolist()[0] == 1 and worst.tolist()[0] == 2
    assert best[1] != worst[1]


def test_unlabeled_substep_uses_only_the_reward_models_best_vs_worst():
    r = _rewards(5, 4)
    p_idx, y_idx, s = unlabeled_signals(r, nudge=0.03)
    best, worst = best_worst(r)
    assert p_idx.tolist() == [b for b in range(5) for _ in range(2)]
    assert torch.equal(y_idx.view(5, 2), torch.stack([best, worst], dim=1))
    assert (s.view(5, 2)[:, 0] > 0.03).all() and (s.view(5, 2)[:, 1] < 0.03).all()


def test_it_rejects_pairs_outside_the_responses():
    import pytest

    with pytest.raises(ValueError):
        reinforce_signals(_rewards(2, 3), torch.tensor([[0, 3], [1, 2]]), nudge=0.0)
