"""Win rate of a policy against a base policy, as the papers define it.

Win rate = mean over held-out prompts of the judge's probability that the new policy's answer
is preferred over the base policy's answer (a tie counts one half, through the judge's
probability). The 95% interval is a percentile bootstrap over prompts.

Invalid judge results are excluded from the mean and counted in ``n_invalid``; they are never
counted as 0.5.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from ml_worker.core.judges.base import Judge, JudgeQuery


@dataclass(frozen=True)
class WinRate:
    """A win rate with its bootstrap interval.

    ``per_prompt``: ``[P]`` probability per prompt that the new answer wins, NaN where the
    judge's result was invalid (excluded from ``mean``, ``low``, ``high``; counted in
    ``n_invalid``). ``low``/``high``: the 2.5% and 97.5% bootstrap percentiles of the mean.
    """

    mean: float
    low: float
    high: float
    per_prompt: torch.Tensor
    n_invalid: int = 0

    @property
    def n_valid(self) -> int:
        return int(self.per_prompt.numel()) - self.n_invalid

    def as_dict(self) -> dict[str, float | int]:
        return {
            "win_rate": self.mean,
            "low": self.low,
            "high": self.high,
            "n_valid": self.n_valid,
            "n_invalid": self.n_invalid,
        }


class NoValidJudgmentsError(ValueError):
    """Every judge result was invalid: there is no win rate to report."""


def bootstrap_mean_interval(
    values: torch.Tensor, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values: [P]`` (vectorized).

    Draws ``n_boot`` resamples of P indices with replacement in one ``[n_boot, P]`` tensor.
    """
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError("values must be a non-empty 1-D tensor")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    values = values.double()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (n_boot, values.numel()), generator=gen)
    means = values[idx].mean(dim=1)  # [n_boot]
    alpha = (1.0 - level) / 2.0
    q = torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


def win_rate_from_probs(per_prompt: torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> WinRate:
    """`WinRate` from per-prompt win probabilities ``[P]`` (NaN marks an invalid prompt)."""
    per_prompt = per_prompt.detach().double().flatten()
    valid = ~torch.isnan(per_prompt)
    n_invalid = int((~valid).sum())
    if not bool(valid.any()):
        raise NoValidJudgmentsError(f"all {per_prompt.numel()} judge results were invalid")
    values = per_prompt[valid]
    low, high = bootstrap_mean_interval(values, n_boot=n_boot, seed=seed)
    return WinRate(float(values.mean()), low, high, per_prompt, n_invalid)


def win_rate(
    judge: Judge,
    prompts: list[str],
    new_answers: list[str],
    base_answers: list[str],
    references: list[str | None] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """Win rate of ``new_answers`` over ``base_answers`` (one answer each per prompt).

    The new answer is shown as A and the base answer as B; configure the judge with
    ``both_orders`` to cancel a position bias. ``seed`` seeds both the judge's sampling and
    the bootstrap. Raises `NoValidJudgmentsError` when every result is invalid (its message
    counts the reasons).
    """
    n = len(prompts)
    if len(new_answers) != n or len(base_answers) != n:
        raise ValueError("prompts, new_answers and base_answers must have the same length")
    refs = list(references) if references is not None else [None] * n
    if len(refs) != n:
        raise ValueError("references must have the same length as prompts")
    if n == 0:
        raise ValueError("win_rate needs at least one prompt")
    queries = [
        JudgeQuery(p, a, b, r)
        for p, a, b, r in zip(prompts, new_answers, base_answers, refs, strict=True)
    ]
    results = judge.judge(queries, seed=seed)
    if len(results) != n:
        raise RuntimeError(f"judge returned {len(results)} results for {n} queries")
    per_prompt = torch.tensor(
        [float("nan") if r.prob_a is None or not r.valid else r.prob_a for r in results],
        dtype=torch.float64,
    )
    try:
        return win_rate_from_probs(per_prompt, n_boot=n_boot, seed=seed)
    except NoValidJudgmentsError as exc:
        reasons = Counter(r.invalid_reason for r in results)
        raise NoValidJudgmentsError(f"{exc}: {dict(reasons.most_common(5))}") from None


def exact_pair_win_probs(
    rewards: torch.Tensor,
    probs_new: torch.Tensor,
    probs_base: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-prompt exact P(new sample beats base sample) under a Bradley-Terry judge.

    rewards: ``[P, C]`` judge rewards of each prompt's C pool candidates;
    probs_new, probs_base: ``[P, C]`` each policy's sampling probabilities over the pool.
    Returns ``[P]``: ``sum_ij new[p, i] base[p, j] sigmoid((r[p, i] - r[p, j]) / T)``.
    ``temperature=0`` is the noiseless judge (a step, 0.5 on equal rewards).
    """
    if rewards.ndim != 2 or probs_new.shape != rewards.shape or probs_base.shape != rewards.shape:
        raise ValueError("rewards, probs_new and probs_base must all be [P, C]")
    r = rewards.double()
    diff = r[:, :, None] - r[:, None, :]  # [P, C, C]
    pref = (torch.sign(diff) + 1.0) / 2.0 if temperature == 0 else torch.sigmoid(diff / temperature)
    return torch.einsum("pi,pij,pj->p", probs_new.double(), pref, probs_base.double())


def exact_win_rate(
    rewards: torch.Tensor,
    probs_new: torch.Tensor,
    probs_base: torch.Tensor,
    *,
    temperature: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """Exact expected win rate of a pool policy against another (see `exact_pair_win_probs`).

    The mean is exact (no judge sampling); the interval is a bootstrap over prompts, i.e. the
    uncertainty from which prompts were held out.
    """
    per_prompt = exact_pair_win_probs(rewards, probs_new, probs_base, temperature=temperature)
    return win_rate_from_probs(per_prompt, n_boot=n_boot, seed=seed)
