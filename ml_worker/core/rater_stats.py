"""Rater statistics in plain Python (no NumPy): the web process computes them for the raters
page, which must not import NumPy or torch; ``raters.py`` re-exports them."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from ml_worker.core.choice import Choice

__all__ = ["CHOICES", "agreement", "wilson"]

#: The four answers, in the comparison's own terms (index = class).
CHOICES: tuple[str, ...] = tuple(c.value for c in Choice)


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (``k, n`` may be soft counts)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement(
    items: Sequence[Hashable], raters: Sequence[str], choices: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Rater -> (agreements, comparisons) with every other rater on the same item.

    Each pair of labels on one item counts once for each of its two raters.
    """
    by_item: dict[Hashable, list[tuple[str, str]]] = {}
    for x, r, c in zip(items, raters, choices, strict=True):
        by_item.setdefault(x, []).append((r, c))
    out: dict[str, list[int]] = {}
    for labels in by_item.values():
        for i, (r1, c1) in enumerate(labels):
            for r2, c2 in labels[i + 1 :]:
                if r1 == r2:
                    continue
                same = int(c1 == c2)
                for r in (r1, r2):
                    acc = out.setdefault(r, [0, 0])
                    acc[0] += same
                    acc[1] += 1
    return {r: (a, b) for r, (a, b) in out.items()}
