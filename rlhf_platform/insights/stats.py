"""The statistics behind the researcher and admin pages, as pure functions (no database).

Each function documents exactly what it computes; ``docs/research.md`` repeats the
definitions for readers of the pages. The selectors (:mod:`rlhf_platform.insights.selectors`)
feed them rows read from the database.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ml_worker.core.choice import Choice, Preference

# Kappa and agreement compare *preferences* (:attr:`Choice.preference`, docs/choice.md): "tie"
# and "both bad" both say "no preference between the two", so they are folded into one
# category before comparing.
NO_PREFERENCE = Preference.NONE.value
KAPPA_CATEGORIES = tuple(p.value for p in Preference)
CHOICES = tuple(c.value for c in Choice)


def preference(choice: str) -> str:
    """A, B, or :data:`NO_PREFERENCE` (tie and both bad)."""
    return Choice(choice).preference.value


def agreement_rate(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Share of pairs whose two preferences match (tie and both bad count as the same)."""
    if not pairs:
        return None
    return sum(preference(x) == preference(y) for x, y in pairs) / len(pairs)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over the categories A, B and no preference.

    ``kappa = (p_o - p_e) / (1 - p_e)``, with ``p_o`` the observed agreement and ``p_e`` the
    agreement expected from each rater's own marginal shares. Ties: "tie" and "both bad" are
    one category (no preference), a full third category, not dropped, so a rater who often
    declines to choose is not rewarded for it. Returns None without pairs, and when ``p_e``
    is 1 (both raters always gave the same single category: kappa is undefined).
    """
    if not pairs:
        return None
    n = len(pairs)
    first = Counter(preference(x) for x, _ in pairs)
    second = Counter(preference(y) for _, y in pairs)
    p_o = sum(preference(x) == preference(y) for x, y in pairs) / n
    p_e = sum(first[c] * second[c] for c in KAPPA_CATEGORIES) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def confusion_table(pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    """Counts ``[row][col]`` over :data:`CHOICES` (rows: first rater, columns: second)."""
    index = {c: i for i, c in enumerate(CHOICES)}
    table = [[0] * len(CHOICES) for _ in CHOICES]
    for x, y in pairs:
        table[index[x]][index[y]] += 1
    return table


@dataclass(frozen=True)
class PositionBias:
    """How much a rater's answers depend on the left/right order.

    ``flip_rate``: among the judge calls that asked in both orders (``order_disagreement``
    set), the share whose answer changed when the order was swapped. None when no call
    asked twice.

    ``first_position_rate``: among decisive answers (A or B), the share that picked the
    response *shown first* (the left one). The order is randomized per label, so an
    unbiased rater sits near 0.5; ``ci`` is its 95% Wilson interval.
    """

    swapped_calls: int
    flips: int
    flip_rate: float | None
    decisive: int
    picked_first: int
    first_position_rate: float | None
    ci: tuple[float, float] | None


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def position_bias(
    *,
    order_disagreements: Iterable[bool | None],
    shown: Iterable[tuple[str, bool]],
) -> PositionBias:
    """``order_disagreements``: one per judge call (None when it asked in one order only).
    ``shown``: ``(choice, shown_swapped)`` per label, ``choice`` in the comparison's terms;
    the response shown first is A unless ``shown_swapped``."""
    asked_twice = [d for d in order_disagreements if d is not None]
    flips = sum(1 for d in asked_twice if d)
    decisive = [(c, s) for c, s in shown if c in ("A", "B")]
    first = sum(1 for c, s in decisive if (c == "A") != s)
    return PositionBias(
        swapped_calls=len(asked_twice),
        flips=flips,
        flip_rate=flips / len(asked_twice) if asked_twice else None,
        decisive=len(decisive),
        picked_first=first,
        first_position_rate=first / len(decisive) if decisive else None,
        ci=wilson_interval(first, len(decisive)),
    )


def majority(choices: Sequence[str]) -> str | None:
    """The preference most of ``choices`` give, or None without a unique one."""
    counts = Counter(preference(c) for c in choices).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


# --- The extrapolation fit of the paper ---------------------------------------------------


@dataclass(frozen=True)
class PowerFit:
    """``w(n) = 1 - 0.5 (n / a) ** (-b)``: the win rate after ``n`` labels.

    ``a`` is where the curve crosses 0.5 (the labels at which the policy ties the initial
    one), ``b`` how fast it climbs. Fitted in closed form by ordinary least squares on the
    linearized form ``log(0.5 / (1 - w)) = b log n - b log a`` (see :func:`fit_power_law`).
    """

    a: float
    b: float
    points: int
    r2: float | None
    # For the uncertainty of an extrapolation: the fitted line passes through (mx, my);
    # se_b and se_my are the standard errors of its slope and of its mean (None with fewer
    # than three points: no residual degree of freedom).
    mx: float = 0.0
    my: float = 0.0
    se_b: float | None = None
    se_my: float | None = None

    @property
    def supported(self) -> bool:
        """Enough points to extrapolate from: at least ``MIN_FIT_POINTS``, a rising curve,
        and a measurable spread around it."""
        return self.points >= MIN_FIT_POINTS and self.b > 0 and self.se_b is not None

    def labels_interval(self, win_rate: float, z: float = 1.96) -> tuple[float, float] | None:
        """An approximate 95% interval of :meth:`labels_for`: the labels where the line
        reaches ``win_rate`` when its slope and its level each move by ``z`` standard
        errors (the four corners; the upper end is ``inf`` when the slope may be 0)."""
        se_b, se_my = self.se_b, self.se_my  # set together (fit_power_law)
        if not self.supported or se_b is None or se_my is None or not 0.0 < win_rate < 1.0:
            return None
        y = math.log(0.5 / (1.0 - win_rate))
        ends = []
        for b in (self.b - z * se_b, self.b + z * se_b):
            for my in (self.my - z * se_my, self.my + z * se_my):
                if b <= 0:
                    ends.append(math.inf)
                    continue
                ends.append(math.exp(min(self.mx + (y - my) / b, 700.0)))
        return min(ends), max(ends)

    def win_rate(self, n: float) -> float:
        # float ** float is typed Any (a negative base gives a complex); n and a are > 0.
        scale: float = (n / self.a) ** (-self.b)
        return 1.0 - 0.5 * scale

    def labels_for(self, win_rate: float) -> float | None:
        """Labels the fit needs to reach ``win_rate``: ``a (0.5 / (1 - w)) ** (1 / b)``.
        None when the curve never gets there (``b <= 0``, or ``w`` outside (0, 1))."""
        if self.b <= 0 or not 0.0 < win_rate < 1.0:
            return None
        scale: float = (0.5 / (1.0 - win_rate)) ** (1.0 / self.b)  # base > 0 here
        return self.a * scale


# Win rates are clipped into [W_MIN, W_MAX] before the log: a measured 1.0 (or 0.0) has no
# finite image, and a bootstrap on a few prompts does measure them.
W_MIN, W_MAX = 0.001, 0.999
# Fewer evaluations than this, and the page says "not enough data yet" rather than a number.
MIN_FIT_POINTS = 3


def fit_power_law(points: Iterable[tuple[float, float]]) -> PowerFit | None:
    """Fit ``w(n) = 1 - 0.5 (n/a)^(-b)`` to ``(labels, win_rate)`` points.

    Closed form, no optimizer: with ``x = log n`` and ``y = log(0.5 / (1 - w))`` the model is
    the line ``y = b x - b log a``; ordinary least squares gives ``b`` (slope) and
    ``c`` (intercept), then ``a = exp(-c / b)``. Points with ``n <= 0`` are dropped (no log);
    win rates are clipped to [0.001, 0.999]. The fit minimizes squared error in ``y``, not in
    ``w``: points near w = 1 weigh more, which is what an extrapolation to high win rates
    wants. Returns None with fewer than two distinct ``n``, or a flat line (``b == 0``).
    """
    xs, ys = [], []
    for n, w in points:
        if n is None or w is None or n <= 0:
            continue
        w = min(max(w, W_MIN), W_MAX)
        xs.append(math.log(n))
        ys.append(math.log(0.5 / (1.0 - w)))
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    if b == 0:
        return None
    c = my - b * mx
    a = math.exp(-c / b)
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (b * x + c)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    se_b = se_my = None
    if len(xs) >= 3:
        sigma = math.sqrt(ss_res / (len(xs) - 2))
        se_b, se_my = sigma / math.sqrt(sxx), sigma / math.sqrt(len(xs))
    return PowerFit(a=a, b=b, points=len(xs), r2=r2, mx=mx, my=my, se_b=se_b, se_my=se_my)


# --- Budgets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurnRate:
    labels_per_day: float
    cost_per_day: float
    window_days: float

    @property
    def window_hours(self) -> float:
        return self.window_days * 24


def burn_rate(
    events: Iterable[tuple[dt.datetime, int, float | Decimal]],
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
) -> BurnRate:
    """Labels and cost spent per day over the last ``window``.

    ``events``: ``(when, labels, amount)`` ledger entries. The rate divides what was spent
    in ``(now - window, now]`` by the window's length, or, for a campaign younger than the
    window, by the time since its first entry: the real span, with no floor (an hour's
    floor made a 15-minute-old campaign look four times slower than it is). Only a span
    under one minute is counted as one minute: a burst in the first seconds is a rate
    per minute, not a projection of that second over a day.
    """
    events = list(events)
    start = now - window
    inside = [(t, n, amt) for t, n, amt in events if start < t <= now]
    if not events:
        return BurnRate(0.0, 0.0, window / dt.timedelta(days=1))
    first = min(t for t, _, _ in events)
    span = min(window, max(now - first, dt.timedelta(minutes=1)))
    days = span / dt.timedelta(days=1)
    labels = sum(n for _, n, _ in inside)
    cost = sum(float(amt) for _, _, amt in inside)
    return BurnRate(labels / days, cost / days, days)


def exhaustion_date(
    *, remaining: float | None, per_day: float, now: dt.datetime
) -> dt.datetime | None:
    """When ``remaining`` runs out at ``per_day``: None without a cap or without spending."""
    if remaining is None or per_day <= 0:
        return None
    if remaining <= 0:
        return now
    return now + dt.timedelta(days=remaining / per_day)


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def quartiles(values: Sequence[float]) -> tuple[float, float, float, float, float] | None:
    """min, Q1, median, Q3, max (inclusive method), or None without values."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return (v[0],) * 5
    q1, q2, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return (v[0], q1, q2, q3, v[-1])
