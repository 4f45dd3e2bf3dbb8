"""Acquisition rules: which pair of responses to ask a rater about, per prompt.

All rules are vectorized over ``B`` prompts, ``K`` responses per prompt and ``M`` ENN
particles, over all ``K x (K - 1)`` ordered pairs ``(a, b), a != b``. The preference
probability under particle ``m`` is ``P_m(a > b) = sigmoid(r_m[a] - r_m[b])``.

- ``uniform``: a pair drawn uniformly at random (the "online" algorithm).
- ``infomax``: the pair of maximal variance across particles of ``P(a > b)``: the paper's
  information-directed rule. Exact ties (for instance all particles agree, so every variance
  is zero) are broken uniformly at random with the generator, never toward pair (0, 1).
- ``double_thompson``: ``a`` is the argmax of a randomly drawn particle, ``b`` the argmax of
  another independently drawn particle, redrawn until ``b != a``; after ``max_tries`` draws
  ``b`` is uniform among the other responses (Dwaracherla et al., 2024).
- ``boltzmann``: two distinct responses sampled without replacement from
  ``softmax(point_rewards / temperature)``; temperature 0 is the top-2 pair.

Every rule takes an optional ``valid: bool[B, K]``: responses a pair may use (e.g. from
``distinct_responses``, so that two identical texts are never compared). A prompt with fewer
than two valid responses falls back to all of its responses.

Every rule returns a ``Selection``: the pair per prompt, ``score`` (the particle variance of
``P(a > b)`` for the chosen pair: for ``infomax`` the criterion it maximized, for the other rules
recorded so that rules can be compared on the same scale; NaN when no particles were given),
and the particle mean and variance of ``P(a > b)``. Variances are population variances
(divided by ``M``) so that ``M = 1`` gives zero, not NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ACQUISITION_RULES",
    "Selection",
    "boltzmann",
    "distinct_responses",
    "double_thompson",
    "infomax",
    "pair_statistics",
    "select_pairs",
    "uniform",
]

#: Variances closer than this to the row maximum count as ties. Meaningful variances of a
#: probability are far above it; float32 rounding of identical particles stays far below.
TIE_ATOL = 1e-10


@dataclass(frozen=True)
class Selection:
    """One pair per prompt. All fields ``[B]``; ``a != b`` for every prompt."""

    a: Tensor  # long [B]
    b: Tensor  # long [B]
    score: Tensor  # float [B]
    p_mean: Tensor  # float [B], particle mean of P(a > b)
    p_var: Tensor  # float [B], particle variance of P(a > b)

    def pairs(self) -> Tensor:
        """``[B, 2]`` long: ``(a, b)`` per prompt."""
        return torch.stack([self.a, self.b], dim=1)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def pair_statistics(particle_rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Particle mean and variance of ``P(a > b)`` for every ordered pair.

    ``particle_rewards: [M, B, K]`` -> ``(mean: [B, K, K], var: [B, K, K])``; entry
    ``[b, i, j]`` is about ``P(i > j)`` for prompt ``b``. The diagonal is 1/2 and 0.
    """
    _check_particles(particle_rewards)
    r = particle_rewards.float()
    probs = torch.sigmoid(r.unsqueeze(-1) - r.unsqueeze(-2))  # [M, B, K, K]
    var, mean = _var_mean(probs)
    return mean, var


def _var_mean(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Population variance and mean over dim 0, two-pass (exactly 0 for identical rows).

    Written out because ``torch.var_mean`` over the leading dim is about 10x slower here.
    """
    mean = probs.mean(dim=0)
    return (probs - mean).square().mean(dim=0), mean


def _check_particles(particle_rewards: Tensor) -> None:
    if particle_rewards.dim() != 3:
        raise ValueError(f"particle_rewards must be [M, B, K], got {tuple(particle_rewards.shape)}")
    if particle_rewards.shape[2] < 2:
        raise ValueError("need at least K = 2 responses per prompt to form a pair")


def _check_point(point_rewards: Tensor) -> None:
    if point_rewards.dim() != 2:
        raise ValueError(f"point_rewards must be [B, K], got {tuple(point_rewards.shape)}")
    if point_rewards.shape[1] < 2:
        raise ValueError("need at least K = 2 responses per prompt to form a pair")


def _argmax_random_ties(
    values: Tensor, generator: torch.Generator | None, atol: float = 0.0
) -> Tensor:
    """Argmax over the last dim; among entries within ``atol`` of the max, uniform at random.

    ``values: [..., n]`` (``-inf`` entries are never chosen unless all are) -> long ``[...]``.
    """
    top = values.max(dim=-1, keepdim=True).values
    ties = values >= top - atol
    keys = torch.rand(values.shape, generator=generator, device="cpu").to(values.device)
    return torch.where(ties, keys, torch.full_like(keys, -1.0)).argmax(dim=-1)


def _random_among(allowed: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform index among the True entries of each row. ``allowed: bool[B, n]`` -> ``[B]``."""
    keys = torch.rand(allowed.shape, generator=generator)
    return torch.where(allowed.cpu(), keys, torch.full_like(keys, -1.0)).argmax(dim=-1)


def _without(allowed: Tensor, index: Tensor) -> Tensor:
    """``allowed: bool[B, n]`` with entry ``index[b]`` of each row set to False."""
    out = allowed.clone()
    out[torch.arange(out.shape[0]), index] = False
    return out


def _valid_mask(valid: Tensor | None, batch: int, k: int) -> Tensor:
    """``bool[B, K]`` on the CPU; rows with fewer than 2 valid responses become all True."""
    if valid is None:
        return torch.ones(batch, k, dtype=torch.bool)
    valid = torch.as_tensor(valid, dtype=torch.bool).cpu()
    if valid.shape != (batch, k):
        raise ValueError(f"valid must be [{batch}, {k}], got {tuple(valid.shape)}")
    too_few = valid.sum(dim=1) < 2
    return torch.where(too_few.unsqueeze(1), torch.ones_like(valid), valid)


def distinct_responses(responses: Sequence[Sequence[str]]) -> Tensor:
    """``bool[B, K]``: True for the first occurrence of each text (whitespace-stripped) in its
    prompt's group, so that no pair of identical responses is ever asked about."""
    rows = []
    for group in responses:
        seen: set[str] = set()
        row = []
        for text in group:
            key = text.strip()
            row.append(key not in seen)
            seen.add(key)
        rows.append(row)
    if len({len(r) for r in rows}) > 1:
        raise ValueError("every prompt needs the same number K of responses")
    return torch.tensor(rows, dtype=torch.bool).reshape(len(rows), -1)


def _finish(
    a: Tensor,
    b: Tensor,
    particle_rewards: Tensor | None,
    point_rewards: Tensor | None = None,
) -> Selection:
    """Fill in mean/variance of ``P(a > b)`` for the chosen pairs."""
    a, b = a.long().cpu(), b.long().cpu()
    if particle_rewards is not None:
        r = particle_rewards.float().cpu()
        rows = torch.arange(a.shape[0])
        probs = torch.sigmoid(r[:, rows, a] - r[:, rows, b])  # [M, B]
        p_var, p_mean = _var_mean(probs)
    else:
        assert point_rewards is not None  # noqa: S101 (type narrowing for mypy, not a check)
        r = point_rewards.float().cpu()
        rows = torch.arange(a.shape[0])
        p_mean = torch.sigmoid(r[rows, a] - r[rows, b])
        p_var = torch.full_like(p_mean, float("nan"))
    return Selection(a=a, b=b, score=p_var.clone(), p_mean=p_mean, p_var=p_var)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def uniform(
    particle_rewards: Tensor | None = None,
    point_rewards: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    valid: Tensor | None = None,
) -> Selection:
    """A uniformly random ordered pair ``a != b`` of valid responses per prompt.

    Needs only the shape: ``particle_rewards: [M, B, K]`` or ``point_rewards: [B, K]``.
    """
    if particle_rewards is not None:
        _check_particles(particle_rewards)
        _, batch, k = particle_rewards.shape
    elif point_rewards is not None:
        _check_point(point_rewards)
        batch, k = point_rewards.shape
    else:
        raise ValueError("uniform needs particle_rewards or point_rewards (for B and K)")
    allowed = _valid_mask(valid, batch, k)
    a = _random_among(allowed, generator)
    b = _random_among(_without(allowed, a), generator)
    return _finish(a, b, particle_rewards, point_rewards)


def infomax(
    particle_rewards: Tensor,
    point_rewards: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    atol: float = TIE_ATOL,
    valid: Tensor | None = None,
) -> Selection:
    """The pair with maximal particle variance of ``P(a > b)``, per prompt.

    ``particle_rewards: [M, B, K]``. The variance is symmetric in ``(a, b)``; the returned
    pair has ``a < b``. Pairs whose variance is within ``atol`` of the maximum are tied and
    one of them is drawn uniformly with ``generator`` (when all particles agree, this is a
    uniformly random pair).
    """
    _check_particles(particle_rewards)
    r = particle_rewards.float()
    _, batch, k = r.shape
    ii, jj = torch.triu_indices(k, k, offset=1, device=r.device)  # the K(K-1)/2 pairs a < b
    probs = torch.sigmoid(r[:, :, ii] - r[:, :, jj])  # [M, B, K(K-1)/2]
    var, _ = _var_mean(probs)  # [B, K(K-1)/2]
    if valid is not None:
        allowed = _valid_mask(valid, batch, k).to(var.device)
        var = var.masked_fill(~(allowed[:, ii] & allowed[:, jj]), float("-inf"))
    pick = _argmax_random_ties(var, generator, atol).cpu()
    return _finish(ii.cpu()[pick], jj.cpu()[pick], particle_rewards)


def double_thompson(
    particle_rewards: Tensor,
    point_rewards: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    max_tries: int = 30,
    valid: Tensor | None = None,
) -> Selection:
    """Double Thompson sampling over particles.

    For each prompt: draw a particle, ``a`` = its best response; draw particles again (up to
    ``max_tries`` times), ``b`` = the best response of the first one whose best differs from
    ``a``; if none does, ``b`` is uniform among the other responses. Argmax ties within a
    particle are broken at random. ``particle_rewards: [M, B, K]``.
    """
    _check_particles(particle_rewards)
    if max_tries < 1:
        raise ValueError("max_tries must be >= 1")
    r = particle_rewards.float().cpu()
    m, batch, k = r.shape
    allowed = _valid_mask(valid, batch, k)
    r = r.masked_fill(~allowed.unsqueeze(0), float("-inf"))
    rows = torch.arange(batch)
    first = torch.randint(m, (batch,), generator=generator)
    a = _argmax_random_ties(r[first, rows], generator)  # [B]
    second = torch.randint(m, (batch, max_tries), generator=generator)
    cand = _argmax_random_ties(r[second, rows.unsqueeze(1)], generator)  # [B, tries]
    differs = cand != a.unsqueeze(1)
    found = differs.any(dim=1)
    first_ok = differs.float().argmax(dim=1)  # first True (0 if none)
    fallback = _random_among(_without(allowed, a), generator)
    b = torch.where(found, cand[rows, first_ok], fallback)
    return _finish(a, b, particle_rewards)


def boltzmann(
    particle_rewards: Tensor | None = None,
    point_rewards: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    valid: Tensor | None = None,
) -> Selection:
    """Two distinct responses drawn from ``softmax(point_rewards / temperature)``.

    ``point_rewards: [B, K]``; ``a`` is the first draw, ``b`` the second (without
    replacement). ``temperature = 0`` takes the two best responses (ties at random);
    ``temperature -> inf`` approaches ``uniform``. ``particle_rewards`` (optional,
    ``[M, B, K]``) only fill in ``score``/``p_var``.
    """
    if point_rewards is None:
        raise ValueError("boltzmann needs point_rewards [B, K]")
    _check_point(point_rewards)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    r = point_rewards.float().cpu()
    batch, k = r.shape
    if valid is not None:
        r = r.masked_fill(~_valid_mask(valid, batch, k), float("-inf"))
    rows = torch.arange(batch)
    if temperature == 0:
        a = _argmax_random_ties(r, generator)
        rest = r.clone()
        rest[rows, a] = float("-inf")
        b = _argmax_random_ties(rest, generator)
    else:
        # Gumbel top-2 = two ordered draws without replacement from softmax(r / temperature).
        u = torch.rand(r.shape, generator=generator).clamp_min(torch.finfo(torch.float32).tiny)
        keys = torch.log_softmax(r / temperature, dim=1) - torch.log(-torch.log(u))
        top = keys.topk(2, dim=1).indices
        a, b = top[:, 0], top[:, 1]
    return _finish(a, b, particle_rewards, point_rewards)


Rule = Callable[..., Selection]

ACQUISITION_RULES: dict[str, Rule] = {
    "uniform": uniform,
    "infomax": infomax,
    "double_thompson": double_thompson,
    "boltzmann": boltzmann,
}


def select_pairs(
    rule: str,
    *,
    particle_rewards: Tensor | None = None,
    point_rewards: Tensor | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Selection:
    """Dispatch to ``ACQUISITION_RULES[rule]``.

    ``particle_rewards: [M, B, K]``, ``point_rewards: [B, K]`` (which ones a rule needs: see
    the rule); ``options`` are the rule's keyword options (``valid``, ``temperature``,
    ``max_tries``, ``atol``).
    """
    try:
        fn = ACQUISITION_RULES[rule]
    except KeyError:
        raise ValueError(
            f"unknown acquisition rule {rule!r}; expected one of {sorted(ACQUISITION_RULES)}"
        ) from None
    if rule in ("infomax", "double_thompson") and particle_rewards is None:
        raise ValueError(f"{rule} needs particle_rewards [M, B, K]")
    return fn(particle_rewards, point_rewards, generator=generator, **options)
