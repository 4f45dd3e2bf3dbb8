"""Win rate against a base policy, its bootstrap interval, and the exact pool win rate."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_worker.core.evaluation import (
    NoValidJudgmentsError,
    bootstrap_mean_interval,
    exact_pair_win_probs,
    exact_win_rate,
    win_rate,
    win_rate_from_probs,
)
from ml_worker.core.judges import JudgeQuery, JudgeResult
from ml_worker.core.judges.oracle import HashingEncoder, OracleJudge

TOPICS = ["rivers", "bridges", "gardens", "trains", "museums", "winter", "bread", "music"]
PROMPTS = [f"Tell me something about {t} in one or two sentences." for t in TOPICS]
GOOD = [
    f"{t.capitalize()} are interesting: people have written about {t} for centuries."
    for t in TOPICS
]
BAD = ["banana banana banana banana banana banana banana" for _ in TOPICS]


def oracle(**kwargs) -> OracleJudge:
    return OracleJudge(embed=HashingEncoder(32), **kwargs)


class ScriptedJudge:
    """Answers with a fixed list of results, recording the queries it was asked."""

    def __init__(self, results: list[JudgeResult]) -> None:
        self.results = results
        self.queries: list[JudgeQuery] = []

    def judge(self, queries: list[JudgeQuery], *, seed: int | None = None) -> list[JudgeResult]:
        self.queries.extend(queries)
        return self.results[: len(queries)]


def test_it_gives_one_half_for_a_policy_against_itself() -> None:
    wr = win_rate(oracle(), PROMPTS, GOOD, GOOD)
    assert wr.mean == pytest.approx(0.5)
    assert wr.low == pytest.approx(0.5) and wr.high == pytest.approx(0.5)
    assert wr.n_invalid == 0 and wr.per_prompt.shape == (len(PROMPTS),)


def test_it_is_antisymmetric_and_favours_the_better_policy() -> None:
    judge = oracle()
    better = win_rate(judge, PROMPTS, GOOD, BAD)
    worse = win_rate(judge, PROMPTS, BAD, GOOD)
    assert better.mean > 0.9
    assert better.mean + worse.mean == pytest.approx(1.0)
    assert better.low <= better.mean <= better.high


def test_it_shows_the_new_answer_as_a_and_passes_references() -> None:
    judge = ScriptedJudge([JudgeResult(0.8, "A", None)] * 2)
    win_rate(judge, PROMPTS[:2], GOOD[:2], BAD[:2], ["ref 1", "ref 2"])
    assert [q.response_a for q in judge.queries] == GOOD[:2]
    assert [q.response_b for q in judge.queries] == BAD[:2]
    assert [q.reference for q in judge.queries] == ["ref 1", "ref 2"]


def test_it_excludes_and_counts_invalid_results_instead_of_scoring_them_one_half() -> None:
    results = [
        JudgeResult(1.0, "A", None),
        JudgeResult.invalid("malformed JSON"),
        JudgeResult(0.8, "A", None),
        JudgeResult.invalid("refusal"),
    ]
    wr = win_rate(ScriptedJudge(results), PROMPTS[:4], GOOD[:4], BAD[:4])
    assert wr.n_invalid == 2 and wr.n_valid == 2
    assert wr.mean == pytest.approx(0.9)  # counting them as 0.5 would give 0.7
    assert torch.isnan(wr.per_prompt[1]) and torch.isnan(wr.per_prompt[3])


def test_it_refuses_to_report_a_win_rate_when_every_result_is_invalid() -> None:
    judge = ScriptedJudge([JudgeResult.invalid("HTTP 500")] * 3)
    with pytest.raises(NoValidJudgmentsError, match="HTTP 500"):
        win_rate(judge, PROMPTS[:3], GOOD[:3], BAD[:3])


def test_it_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        win_rate(oracle(), PROMPTS, GOOD[:-1], BAD)


def test_its_bootstrap_interval_contains_the_mean_and_shrinks_with_more_prompts() -> None:
    gen = torch.Generator().manual_seed(0)
    widths = []
    for n in (20, 200, 2000):
        probs = torch.rand(n, generator=gen) * 0.6 + 0.3
        wr = win_rate_from_probs(probs, n_boot=2000, seed=1)
        assert wr.low < wr.mean < wr.high
        # The percentile interval of a mean is close to the normal one, mean +- 1.96 se.
        se = float(probs.double().std()) / math.sqrt(n)
        assert wr.high - wr.low == pytest.approx(2 * 1.96 * se, rel=0.2)
        widths.append(wr.high - wr.low)
    assert widths[0] > widths[1] > widths[2]


def test_its_bootstrap_is_deterministic_given_a_seed() -> None:
    values = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert bootstrap_mean_interval(values, seed=3) == bootstrap_mean_interval(values, seed=3)
    assert bootstrap_mean_interval(values, seed=3) != bootstrap_mean_interval(values, seed=4)


def pool(p: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(p, c, generator=gen) * 2
    new = torch.softmax(torch.randn(p, c, generator=gen) * 2, dim=-1)
    base = torch.softmax(torch.randn(p, c, generator=gen), dim=-1)
    return rewards, new, base


def test_its_exact_win_rate_is_one_half_against_itself() -> None:
    rewards, new, _ = pool(6, 5, seed=0)
    wr = exact_win_rate(rewards, new, new)
    torch.testing.assert_close(wr.per_prompt, torch.full((6,), 0.5, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31), st.floats(0.05, 5.0))
def test_its_exact_win_probabilities_are_complementary(
    p: int, c: int, seed: int, temperature: float
) -> None:
    rewards, new, base = pool(p, c, seed)
    forward = exact_pair_win_probs(rewards, new, base, temperature=temperature)
    backward = exact_pair_win_probs(rewards, base, new, temperature=temperature)
    # sigma(d) + sigma(-d) = 1, so the sum is (sum of new) * (sum of base), 1 up to float32.
    total = new.double().sum(-1) * base.double().sum(-1)
    torch.testing.assert_close(forward + backward, total)
    assert bool(((forward >= 0) & (forward <= 1)).all())


def test_its_exact_win_rate_matches_a_monte_carlo_estimate() -> None:
    p, c, temperature = 8, 6, 0.7
    rewards, new, base = pool(p, c, seed=1)
    exact = exact_pair_win_probs(rewards, new, base, temperature=temperature)
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    i = torch.multinomial(new, n, replacement=True, generator=gen)  # [P, n]
    j = torch.multinomial(base, n, replacement=True, generator=gen)
    prob = torch.sigmoid((rewards.gather(1, i) - rewards.gather(1, j)) / temperature)
    wins = (torch.rand(p, n, generator=gen) < prob).double().mean(dim=1)
    torch.testing.assert_close(exact, wins, atol=5e-3, rtol=0)


def test_its_exact_win_rate_matches_the_oracle_judge_sampling() -> None:
    # The exact expectation over a pool, with the oracle's own rewards and temperature,
    # matches what sampling answers from both policies and asking the oracle gives.
    judge = oracle(temperature=0.8)
    answers = [GOOD[0], BAD[0], "Rivers.", "Rivers flow to the sea and people wrote about"]
    prompt = PROMPTS[0]
    rewards = judge.reward([prompt] * 4, answers)[None, :]  # [1, 4]
    new = torch.tensor([[0.5, 0.1, 0.2, 0.2]])
    base = torch.tensor([[0.1, 0.5, 0.2, 0.2]])
    exact = float(exact_win_rate(rewards, new, base, temperature=0.8).mean)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    i = torch.multinomial(new[0], n, replacement=True, generator=gen).tolist()
    j = torch.multinomial(base[0], n, replacement=True, generator=gen).tolist()
    results = judge.judge(
        [JudgeQuery(prompt, answers[a], answers[b]) for a, b in zip(i, j, strict=True)], seed=1
    )
    freq = sum(r.choice == "A" for r in results) / n
    assert freq == pytest.approx(exact, abs=4 * math.sqrt(0.25 / n))
