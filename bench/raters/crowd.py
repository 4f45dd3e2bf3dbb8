"""The simulated crowd of the raters benchmark: 20 raters with known behaviour.

Truth comes from the environment's oracle rewards ``r[p, c]`` (the project's oracle on the
label-efficiency pool, or the synthetic environment's hidden rewards). Every rater answers in
the order they were *shown* (``"A"``: the response shown first is better):

- ``careful`` (10): the oracle itself, Bradley-Terry at the oracle's temperature;
- ``noisy`` (4): Bradley-Terry at 4 x that temperature (right more often than not, barely);
- ``random`` (3): any of A, B, tie, both bad, uniformly, fast;
- ``first`` (2): always the response shown first;
- ``longer`` (1): always the longer response (a coin on equal lengths).

``p_correct`` is each behaviour's true probability of giving the oracle's preference, from
which the true reliability ``max(0, 2 * accuracy - 1)`` of each rater is averaged over the
pairs they labeled (the benchmark's ground truth for the Spearman correlation).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: (kind, how many, median seconds per label)
CROWD = (
    ("careful", 10, 12.0),
    ("noisy", 4, 8.0),
    ("random", 3, 1.2),
    ("first", 2, 3.0),
    ("longer", 1, 6.0),
)
BAD_KINDS = ("random", "first", "longer")
NOISY_TEMPERATURE_FACTOR = 4.0


@dataclass(frozen=True)
class SimRater:
    name: str
    kind: str
    median_seconds: float


def make_crowd() -> list[SimRater]:
    out = []
    for kind, n, seconds in CROWD:
        for i in range(n):
            out.append(SimRater(f"{kind}{i:02d}", kind, seconds))
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def answer(
    rater: SimRater,
    *,
    r_first: float,
    r_second: float,
    len_first: int,
    len_second: int,
    temperature: float,
    rng: random.Random,
) -> str:
    """The rater's answer in shown terms: "A" (first better), "B", "tie" or "both_bad"."""
    kind = rater.kind
    if kind in ("careful", "noisy"):
        t = temperature * (NOISY_TEMPERATURE_FACTOR if kind == "noisy" else 1.0)
        return "A" if rng.random() < _sigmoid((r_first - r_second) / t) else "B"
    if kind == "random":
        return rng.choice(("A", "B", "tie", "both_bad"))
    if kind == "first":
        return "A"
    if kind == "longer":
        if len_first == len_second:
            return rng.choice(("A", "B"))
        return "A" if len_first > len_second else "B"
    raise ValueError(f"unknown rater kind {kind!r}")


def p_correct(kind: str, *, diff: float, longer_is_better: float, temperature: float) -> float:
    """P(the rater prefers the oracle's better response | it states a preference), on a pair
    whose reward gap is ``diff = |r_a - r_b|`` (the order it is shown in is random)."""
    if kind == "careful":
        return _sigmoid(diff / temperature)
    if kind == "noisy":
        return _sigmoid(diff / (temperature * NOISY_TEMPERATURE_FACTOR))
    if kind in ("random", "first"):
        return 0.5
    if kind == "longer":
        return longer_is_better
    raise ValueError(f"unknown rater kind {kind!r}")


def seconds(rater: SimRater, rng: random.Random) -> int:
    """Time taken, in ms: log-normal around the rater's median."""
    return int(1000 * rater.median_seconds * math.exp(rng.gauss(0.0, 0.3)))
