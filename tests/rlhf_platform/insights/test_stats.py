"""The statistics against small cases worked out by hand (the arithmetic is in each test)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from rlhf_platform.insights import stats

# 10 pairs (first rater, second rater); tie and both bad are one "no preference" category.
PAIRS = [
    ("A", "A"),
    ("A", "A"),
    ("A", "A"),
    ("A", "B"),
    ("B", "B"),
    ("B", "B"),
    ("B", "A"),
    ("tie", "tie"),
    ("both_bad", "tie"),  # agree: both say "no preference"
    ("tie", "A"),
]


def test_agreement_counts_tie_and_both_bad_as_the_same_answer():
    # Agreeing pairs: 1, 2, 3, 5, 6, 8, 9 -> 7 of 10.
    assert stats.agreement_rate(PAIRS) == pytest.approx(0.7)
    assert stats.agreement_rate([]) is None


def test_kappa_matches_the_hand_computation():
    # p_o = 0.7. Marginals, first rater: A 4, B 3, none 3; second: A 5, B 3, none 2.
    # p_e = (4*5 + 3*3 + 3*2) / 100 = 0.35; kappa = (0.7 - 0.35) / 0.65 = 7/13.
    assert stats.cohen_kappa(PAIRS) == pytest.approx(7 / 13)


def test_kappa_is_one_for_perfect_agreement_and_zero_at_chance():
    assert stats.cohen_kappa([("A", "A"), ("B", "B"), ("tie", "both_bad")]) == pytest.approx(1.0)
    # p_o = 0.5; marginals A/B 1/2 each on both sides -> p_e = 0.5 -> kappa 0.
    assert stats.cohen_kappa([("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")]) == pytest.approx(0)


def test_kappa_is_undefined_when_both_raters_always_give_one_answer():
    assert stats.cohen_kappa([("A", "A"), ("A", "A")]) is None
    assert stats.cohen_kappa([]) is None


def test_confusion_table_keeps_all_four_choices():
    table = stats.confusion_table(PAIRS)
    a, b, tie, bad = range(4)
    assert table[a][a] == 3 and table[a][b] == 1 and table[b][a] == 1 and table[b][b] == 2
    assert table[tie][tie] == 1 and table[bad][tie] == 1 and table[tie][a] == 1
    assert sum(map(sum, table)) == 10


def test_position_bias_flip_rate_and_first_position_rate():
    bias = stats.position_bias(
        # 4 calls asked in both orders, 2 flipped; the None asked once and is not counted.
        order_disagreements=[True, False, False, None, True],
        shown=[
            ("A", False),  # A shown first, picked A -> picked the first
            ("A", True),  # B shown first, picked A -> picked the second
            ("B", True),  # B shown first, picked B -> first
            ("B", False),  # second
            ("tie", False),  # not decisive: not counted
            ("A", False),  # first
        ],
    )
    assert (bias.swapped_calls, bias.flips, bias.flip_rate) == (4, 2, 0.5)
    assert (bias.decisive, bias.picked_first) == (5, 3)
    assert bias.first_position_rate == pytest.approx(0.6)
    low, high = bias.ci
    assert low < 0.6 < high


def test_position_bias_without_data_is_none():
    bias = stats.position_bias(order_disagreements=[None], shown=[("tie", True)])
    assert bias.flip_rate is None and bias.first_position_rate is None and bias.ci is None


def test_majority_needs_a_unique_winner():
    assert stats.majority(["A", "A", "B"]) == "A"
    assert stats.majority(["tie", "both_bad", "A"]) == stats.NO_PREFERENCE
    assert stats.majority(["A", "B"]) is None
    assert stats.majority([]) is None


def test_fit_recovers_a_and_b_from_exact_points():
    # a = 100, b = 0.5: w(100) = 0.5, w(400) = 1 - 0.5 * 4^-0.5 = 0.75, w(1600) = 0.875.
    fit = stats.fit_power_law([(100, 0.5), (400, 0.75), (1600, 0.875)])
    assert fit.a == pytest.approx(100)
    assert fit.b == pytest.approx(0.5)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.win_rate(400) == pytest.approx(0.75)
    # n(w) = a (0.5 / (1 - w))^(1/b): n(0.75) = 100 * 2^2 = 400; n(0.9) = 100 * 5^2 = 2500.
    assert fit.labels_for(0.75) == pytest.approx(400)
    assert fit.labels_for(0.9) == pytest.approx(2500)


def test_fit_drops_zero_labels_and_needs_two_distinct_label_counts():
    assert stats.fit_power_law([(0, 0.5), (100, 0.6)]) is None
    assert stats.fit_power_law([(100, 0.6), (100, 0.7)]) is None
    fit = stats.fit_power_law([(0, 0.1), (100, 0.5), (400, 0.75)])
    assert fit.points == 2 and fit.a == pytest.approx(100)


def test_a_falling_curve_never_reaches_a_higher_win_rate():
    fit = stats.fit_power_law([(100, 0.6), (1000, 0.55)])
    assert fit.b < 0
    assert fit.labels_for(0.7) is None


def test_fit_clips_a_perfect_win_rate():
    fit = stats.fit_power_law([(10, 0.5), (100, 1.0)])
    assert math.isfinite(fit.a) and math.isfinite(fit.b)


NOW = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)


def test_burn_rate_over_the_window_and_the_exhaustion_date():
    events = [
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 100, 10.0),  # outside the 2-day window
        (dt.datetime(2026, 1, 9, tzinfo=dt.UTC), 10, 1.0),
        (dt.datetime(2026, 1, 9, 12, tzinfo=dt.UTC), 10, 1.0),
    ]
    burn = stats.burn_rate(events, now=NOW, window=dt.timedelta(days=2))
    # 20 labels and 2.0 spent in 2 days.
    assert burn.labels_per_day == pytest.approx(10)
    assert burn.cost_per_day == pytest.approx(1.0)
    # 50 labels left at 10 a day: 5 days.
    assert stats.exhaustion_date(remaining=50, per_day=10, now=NOW) == dt.datetime(
        2026, 1, 15, tzinfo=dt.UTC
    )


def test_a_young_campaign_divides_by_its_age():
    # First label 12 hours ago, 30 labels since: 60 per day, not 30 / 7.
    events = [(NOW - dt.timedelta(hours=12), 30, 3.0)]
    burn = stats.burn_rate(events, now=NOW, window=dt.timedelta(days=7))
    assert burn.labels_per_day == pytest.approx(60)
    assert burn.window_days == pytest.approx(0.5)


def test_a_quarter_hour_old_campaign_is_not_made_to_look_four_times_slower():
    # 30 labels in the 15 minutes since the first one: 2 a minute, 2880 a day (an hour's
    # floor would have said 720).
    events = [(NOW - dt.timedelta(minutes=15), 20, 2.0), (NOW, 10, 1.0)]
    burn = stats.burn_rate(events, now=NOW, window=dt.timedelta(days=7))
    assert burn.labels_per_day == pytest.approx(2880)
    assert burn.window_hours == pytest.approx(0.25)


def test_the_fit_extrapolates_only_from_enough_points_with_an_interval():
    two = stats.fit_power_law([(100, 0.5), (400, 0.75)])
    assert two is not None and not two.supported and two.labels_interval(0.8) is None
    three = stats.fit_power_law([(100, 0.52), (400, 0.74), (1600, 0.88)])
    assert three.supported
    lo, hi = three.labels_interval(0.9)
    assert lo < three.labels_for(0.9) < hi
    exact = stats.fit_power_law([(100, 0.5), (400, 0.75), (1600, 0.875)])
    lo, hi = exact.labels_interval(0.9)  # points on the curve: no spread, a tight interval
    assert lo == pytest.approx(hi) == pytest.approx(exact.labels_for(0.9))


def test_no_cap_or_no_spending_has_no_exhaustion_date():
    assert stats.exhaustion_date(remaining=None, per_day=10, now=NOW) is None
    assert stats.exhaustion_date(remaining=10, per_day=0, now=NOW) is None
    assert stats.exhaustion_date(remaining=0, per_day=3, now=NOW) == NOW
    assert stats.burn_rate([], now=NOW).labels_per_day == 0


def test_quartiles():
    assert stats.quartiles([1, 2, 3, 4, 5]) == (1, 2, 3, 4, 5)
    assert stats.quartiles([7]) == (7, 7, 7, 7, 7)
    assert stats.quartiles([]) is None
