from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml_worker.core.acquisition import (
    ACQUISITION_RULES,
    boltzmann,
    distinct_responses,
    double_thompson,
    infomax,
    pair_statistics,
    select_pairs,
    uniform,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: threads only add OpenMP spin-waits, which on a loaded 2-core
    machine make each op 10x slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = settings(max_examples=60, deadline=None)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def particle_tensors(
    draw: st.DrawFn, max_m: int = 6, max_b: int = 4, max_k: int = 6
) -> torch.Tensor:
    m = draw(st.integers(1, max_m))
    b = draw(st.integers(1, max_b))
    k = draw(st.integers(2, max_k))
    values = draw(
        arrays(np.float32, (m, b, k), elements=st.floats(-6, 6, width=32, allow_nan=False))
    )
    return torch.from_numpy(values)


def brute_force_stats(r: torch.Tensor, b: int, i: int, j: int) -> tuple[float, float]:
    """Mean and population variance of sigmoid(r_i - r_j) over particles, in float64."""
    p = torch.sigmoid(r[:, b, i].double() - r[:, b, j].double())
    return float(p.mean()), float(((p - p.mean()) ** 2).mean())


# ---- statistics ------------------------------------------------------------------------------


@FAST
@given(r=particle_tensors())
def test_pair_statistics_match_a_loop_over_pairs(r: torch.Tensor) -> None:
    mean, var = pair_statistics(r)
    _, batch, k = r.shape
    for b, i, j in itertools.product(range(batch), range(k), range(k)):
        m_ref, v_ref = brute_force_stats(r, b, i, j)
        assert mean[b, i, j].item() == pytest.approx(m_ref, abs=1e-5)
        assert var[b, i, j].item() == pytest.approx(v_ref, abs=1e-6)


def test_variance_is_zero_when_particles_agree() -> None:
    r = torch.randn(1, 5, 7).expand(30, 5, 7)
    _, var = pair_statistics(r)
    assert var.abs().max() < 1e-12
    sel = infomax(r, generator=gen())
    assert sel.p_var.abs().max() < 1e-12


# ---- infomax ---------------------------------------------------------------------------------


@FAST
@given(r=particle_tensors(), seed=st.integers(0, 2**16))
def test_infomax_picks_a_pair_of_maximal_variance(r: torch.Tensor, seed: int) -> None:
    sel = infomax(r, generator=gen(seed))
    _, batch, k = r.shape
    assert sel.a.shape == sel.b.shape == sel.score.shape == (batch,)
    for b in range(batch):
        a, c = int(sel.a[b]), int(sel.b[b])
        assert a != c and 0 <= a < k and 0 <= c < k
        best = max(brute_force_stats(r, b, i, j)[1] for i, j in itertools.permutations(range(k), 2))
        chosen_mean, chosen_var = brute_force_stats(r, b, a, c)
        assert chosen_var == pytest.approx(best, abs=1e-6)
        assert sel.score[b].item() == pytest.approx(chosen_var, abs=1e-6)
        assert sel.p_var[b].item() == pytest.approx(chosen_var, abs=1e-6)
        assert sel.p_mean[b].item() == pytest.approx(chosen_mean, abs=1e-5)


def test_infomax_falls_back_to_a_random_pair_when_particles_agree() -> None:
    k = 5
    r = torch.randn(1, 200, k).expand(20, 200, k)  # 20 identical particles, 200 prompts
    sel = infomax(r, generator=gen(1))
    pairs = Counter(zip(sel.a.tolist(), sel.b.tolist(), strict=True))
    assert all(a != b for a, b in pairs)
    # Every one of the 10 unordered pairs shows up, none dominates (200 / 10 = 20 expected).
    assert len(pairs) == k * (k - 1) // 2
    assert max(pairs.values()) < 45
    # Seeded: the same generator seed gives the same fallback choices.
    again = infomax(r, generator=gen(1))
    assert torch.equal(sel.a, again.a) and torch.equal(sel.b, again.b)


def test_infomax_breaks_exact_ties_only_among_the_tied_pairs() -> None:
    # Particles disagree only about responses 2 and 3: every pair involving them has variance,
    # pair (2, 3) the most. Responses 0, 1 and 4 are agreed on.
    r = torch.zeros(4, 1, 5)
    r[:, 0, 2] = torch.tensor([3.0, -3.0, 3.0, -3.0])
    r[:, 0, 3] = -r[:, 0, 2]
    for seed in range(20):
        sel = infomax(r, generator=gen(seed))
        assert sorted((int(sel.a[0]), int(sel.b[0]))) == [2, 3]


# ---- double Thompson sampling ----------------------------------------------------------------


@FAST
@given(r=particle_tensors(), seed=st.integers(0, 2**16))
def test_double_thompson_picks_argmaxes_of_particles_or_falls_back(
    r: torch.Tensor, seed: int
) -> None:
    # With 200 tries and at most 6 particles, a particle whose best differs from a is found
    # except with negligible probability, so b falls back to uniform only when none exists.
    sel = double_thompson(r, generator=gen(seed), max_tries=200)
    for b in range(r.shape[1]):
        a, c = int(sel.a[b]), int(sel.b[b])
        assert a != c and 0 <= c < r.shape[2]
        is_best = r[:, b] == r[:, b].max(dim=1, keepdim=True).values  # [M, K]
        assert is_best[:, a].any(), "a must be a best response of some particle"
        others = is_best.clone()
        others[:, a] = False
        if others.any():
            assert is_best[:, c].any(), "b must be a best response of another particle"


def test_double_thompson_uses_a_second_particle_when_they_disagree() -> None:
    # Particle 0 prefers response 1, particle 1 prefers response 3.
    r = torch.zeros(2, 100, 4)
    r[0, :, 1] = 1.0
    r[1, :, 3] = 1.0
    sel = double_thompson(r, generator=gen(0))
    assert set(zip(sel.a.tolist(), sel.b.tolist(), strict=True)) == {(1, 3), (3, 1)}


def test_double_thompson_falls_back_to_uniform_when_all_particles_agree() -> None:
    r = torch.zeros(10, 300, 4)
    r[:, :, 2] = 1.0  # every particle's best is response 2
    sel = double_thompson(r, generator=gen(0), max_tries=3)
    assert (sel.a == 2).all()
    counts = Counter(sel.b.tolist())
    assert set(counts) == {0, 1, 3}
    assert min(counts.values()) > 60  # about 100 each


def test_double_thompson_rejects_bad_max_tries() -> None:
    with pytest.raises(ValueError):
        double_thompson(torch.randn(3, 2, 4), generator=gen(), max_tries=0)


# ---- Boltzmann -------------------------------------------------------------------------------


def test_boltzmann_at_zero_temperature_takes_the_top_two() -> None:
    point = torch.randn(50, 8)
    sel = boltzmann(point_rewards=point, generator=gen(), temperature=0.0)
    top2 = point.topk(2, dim=1).indices
    assert torch.equal(sel.a, top2[:, 0]) and torch.equal(sel.b, top2[:, 1])


def test_boltzmann_concentrates_as_temperature_falls() -> None:
    point = torch.arange(6, dtype=torch.float32).repeat(2000, 1)  # response 5 is best
    share_of_best = []
    for temperature in (100.0, 3.0, 1.0, 0.3):
        sel = boltzmann(point_rewards=point, generator=gen(7), temperature=temperature)
        assert (sel.a != sel.b).all()
        share_of_best.append(float((sel.a == 5).float().mean()))
    assert share_of_best == sorted(share_of_best)
    assert share_of_best[0] == pytest.approx(1 / 6, abs=0.04)  # hot: nearly uniform
    assert share_of_best[-1] > 0.9  # cold: nearly greedy


def test_boltzmann_first_draw_follows_the_softmax() -> None:
    point = torch.tensor([[0.0, 1.0, 2.0]]).repeat(20000, 1)
    sel = boltzmann(point_rewards=point, generator=gen(3), temperature=1.0)
    freq = torch.bincount(sel.a, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.softmax(point[0], 0), atol=0.015, rtol=0)


def test_boltzmann_without_particles_reports_point_preference_and_no_variance() -> None:
    point = torch.tensor([[0.0, 2.0]])
    sel = boltzmann(point_rewards=point, generator=gen(), temperature=0.0)
    assert (sel.a.item(), sel.b.item()) == (1, 0)
    assert sel.p_mean.item() == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))
    assert torch.isnan(sel.p_var).all() and torch.isnan(sel.score).all()


def test_boltzmann_rejects_negative_temperature() -> None:
    with pytest.raises(ValueError):
        boltzmann(point_rewards=torch.zeros(1, 3), generator=gen(), temperature=-1.0)


# ---- uniform ---------------------------------------------------------------------------------


def test_uniform_covers_all_ordered_pairs_evenly() -> None:
    k = 4
    sel = uniform(point_rewards=torch.zeros(6000, k), generator=gen(2))
    counts = Counter(zip(sel.a.tolist(), sel.b.tolist(), strict=True))
    assert set(counts) == set(itertools.permutations(range(k), 2))
    assert max(counts.values()) < 600 and min(counts.values()) > 400  # 500 expected each


def test_uniform_is_reproducible_with_a_seeded_generator() -> None:
    r = torch.randn(5, 10, 6)
    one, two = uniform(r, generator=gen(9)), uniform(r, generator=gen(9))
    assert torch.equal(one.a, two.a) and torch.equal(one.b, two.b)


# ---- dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(ACQUISITION_RULES))
def test_every_rule_returns_distinct_in_range_pairs(rule: str) -> None:
    r = torch.randn(10, 32, 5)
    sel = select_pairs(rule, particle_rewards=r, point_rewards=r.mean(0), generator=gen())
    assert sel.pairs().shape == (32, 2)
    assert (sel.a != sel.b).all() and (sel.a >= 0).all() and (sel.b < 5).all()
    for b in range(32):
        m_ref, v_ref = brute_force_stats(r, b, int(sel.a[b]), int(sel.b[b]))
        assert sel.p_mean[b].item() == pytest.approx(m_ref, abs=1e-5)
        assert sel.p_var[b].item() == pytest.approx(v_ref, abs=1e-6)


def test_infomax_picks_more_uncertain_pairs_than_uniform() -> None:
    r = torch.randn(50, 64, 16) * torch.rand(1, 64, 16) * 3  # uncertainty varies by response
    info = select_pairs("infomax", particle_rewards=r, generator=gen())
    rand = select_pairs("uniform", particle_rewards=r, generator=gen())
    assert (info.score >= rand.score - 1e-7).all()
    assert info.score.mean() > 1.3 * rand.score.mean()


def test_select_pairs_rejects_unknown_rules_options_and_shapes() -> None:
    r = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match="unknown acquisition rule"):
        select_pairs("thompson", particle_rewards=r, generator=gen())
    with pytest.raises(ValueError, match="needs particle_rewards"):
        select_pairs("infomax", point_rewards=r[0], generator=gen())
    with pytest.raises(TypeError):
        select_pairs("infomax", particle_rewards=r, generator=gen(), temperature=1.0)
    with pytest.raises(ValueError, match="at least K = 2"):
        select_pairs("infomax", particle_rewards=torch.randn(3, 2, 1), generator=gen())
    with pytest.raises(ValueError, match=r"\[M, B, K\]"):
        select_pairs("double_thompson", particle_rewards=torch.randn(2, 4), generator=gen())


# ---- valid responses (no pair of identical texts) --------------------------------------------


@st.composite
def valid_masks(draw: st.DrawFn, batch: int, k: int) -> torch.Tensor:
    rows = []
    for _ in range(batch):
        row = draw(st.lists(st.booleans(), min_size=k, max_size=k))
        if sum(row) < 2:
            picks = draw(st.permutations(range(k)))[:2]
            for i in picks:
                row[i] = True
        rows.append(row)
    return torch.tensor(rows, dtype=torch.bool)


@FAST
@given(data=st.data(), r=particle_tensors(), rule=st.sampled_from(sorted(ACQUISITION_RULES)))
def test_rules_only_pair_valid_responses(data: st.DataObject, r: torch.Tensor, rule: str) -> None:
    _, batch, k = r.shape
    valid = data.draw(valid_masks(batch, k))
    sel = select_pairs(
        rule, particle_rewards=r, point_rewards=r.mean(0), generator=gen(), valid=valid
    )
    rows = torch.arange(batch)
    assert (sel.a != sel.b).all()
    assert valid[rows, sel.a].all() and valid[rows, sel.b].all()
    if rule == "infomax":
        for b in range(batch):
            ok = [i for i in range(k) if valid[b, i]]
            best = max(brute_force_stats(r, b, i, j)[1] for i, j in itertools.permutations(ok, 2))
            chosen = brute_force_stats(r, b, int(sel.a[b]), int(sel.b[b]))[1]
            assert chosen == pytest.approx(best, abs=1e-6)


def test_distinct_responses_marks_repeated_texts() -> None:
    valid = distinct_responses([["a", "b", "a ", "c"], ["x", "x", "x", "y"]])
    assert valid.tolist() == [[True, True, False, True], [True, False, False, True]]
    with pytest.raises(ValueError, match="same number"):
        distinct_responses([["a", "b"], ["c"]])


def test_identical_responses_are_never_paired_even_when_most_uncertain() -> None:
    # Responses 0 and 1 are the same text; the particles disagree most about them.
    r = torch.zeros(4, 1, 3)
    r[:, 0, 0] = torch.tensor([5.0, -5.0, 5.0, -5.0])
    r[:, 0, 1] = -r[:, 0, 0]
    valid = distinct_responses([["same", "same", "other"]])
    assert sorted(infomax(r, generator=gen()).pairs()[0].tolist()) == [0, 1]
    for rule in sorted(ACQUISITION_RULES):
        sel = select_pairs(
            rule, particle_rewards=r, point_rewards=r.mean(0), generator=gen(), valid=valid
        )
        assert sorted(sel.pairs()[0].tolist()) == [0, 2], rule


def test_a_prompt_with_one_distinct_response_falls_back_to_all() -> None:
    r = torch.randn(5, 2, 3)
    valid = distinct_responses([["same", "same", "same"], ["a", "b", "a"]])
    for seed in range(10):
        sel = uniform(r, generator=gen(seed), valid=valid)
        assert sel.a[0] != sel.b[0]
        assert sorted(sel.pairs()[1].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="valid must be"):
        uniform(r, generator=gen(), valid=torch.ones(2, 4, dtype=torch.bool))
