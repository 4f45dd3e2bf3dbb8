"""The selectors on the seeded campaign (tests/rlhf_platform/insights/seed.py), whose
figures are worked out by hand in each test."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from rlhf_platform.errors import NotFound, PermissionDenied
from rlhf_platform.insights import selectors
from rlhf_platform.labeling.models import Label
from tests.conftest import make_campaign, make_user

pytestmark = pytest.mark.django_db


def test_agreement_rate_kappa_and_confusion(seeded):
    agreement = selectors.human_judge_agreement(seeded)
    assert agreement.comparisons == 6
    assert len(agreement.pairs) == 12
    # Agreeing (human, judge) pairs per comparison: 2, 1, 2, 1, 0, 2 -> 8 of 12.
    assert agreement.agreement == pytest.approx(8 / 12)
    # Human marginals A 6, B 5, none 1; judge A 10, B 2, none 0.
    # p_e = (6*10 + 5*2) / 144 = 70/144, p_o = 96/144 -> kappa = 26/74.
    assert agreement.kappa == pytest.approx(26 / 74)
    a, b, tie = 0, 1, 2
    assert agreement.confusion[a][a] == 6  # c0 2, c1 1, c3 1, c5 2
    assert agreement.confusion[b][a] == 3
    assert agreement.confusion[b][b] == 2
    assert agreement.confusion[tie][a] == 1


def test_judge_position_bias(seeded):
    bias = selectors.human_judge_agreement(seeded).judge_bias
    # order_disagreement: F, F, T, F, F, None -> 1 flip of 5 calls asked in both orders.
    assert (bias.swapped_calls, bias.flips) == (5, 1)
    assert bias.flip_rate == pytest.approx(0.2)
    # Judge shown swapped on comparisons 0 and 3: it picked the first shown 3 times of 6.
    assert bias.first_position_rate == pytest.approx(0.5)


def test_per_annotator_agreement(seeded, annotator, other_annotator):
    rows = {r.username: r for r in selectors.human_judge_agreement(seeded).annotators}
    anna, otto = rows[annotator.username], rows[other_annotator.username]
    assert anna.labels == 6
    assert anna.with_judge == pytest.approx(4 / 6)  # c3 (tie vs A) and c4 (B vs A) differ
    assert anna.with_majority == pytest.approx(4 / 6)  # c1 and c3 differ from otto
    assert otto.with_judge == pytest.approx(4 / 6)


def test_disagreements_ranked_by_gap(seeded):
    rows = selectors.human_judge_agreement(seeded).disagreements
    # |P_judge(A) - human share of A|: c4 0.95, c5 0.4, c1 0.3, c2 0.2, c0 0.1, c3 0.05.
    assert [r.prompt for r in rows[:3]] == [
        "Seeded prompt 4?",
        "Seeded prompt 5?",
        "Seeded prompt 1?",
    ]
    assert rows[0].gap == pytest.approx(0.95)
    assert rows[0].human_choices == ["B", "B"]


def test_reward_accuracy_on_held_out_labels(seeded):
    rows = selectors.reward_accuracy(seeded)
    # Round 0's version chose c0 (predicts A: 3 of 3 right) and c3 (predicts B: 0 of 2).
    assert [(r.round_index, r.correct, r.labels) for r in rows] == [
        (0, 3, 5),
        (1, 2, 6),
        (2, 0, 6),
    ]
    assert rows[0].accuracy == pytest.approx(0.6)


def test_win_rate_series_and_fit(seeded):
    series = selectors.win_rate_series(seeded)
    assert [(p.labels, p.win_rate) for p in series] == [(4, 0.5), (16, 0.75), (64, 0.875)]
    (row,) = selectors.extrapolation([seeded], {seeded.pk: series}, target=0.9)
    assert row.fit.a == pytest.approx(4) and row.fit.b == pytest.approx(0.5)
    assert row.labels_needed == pytest.approx(100)  # 4 * (0.5 / 0.1)^2
    assert row.ratio == pytest.approx(1.0)  # its own reference


def test_label_ratio_against_the_offline_campaign(seeded, researcher, annotator):
    # Offline needs 4x the labels at every win rate: a = 16, same b.
    offline = make_campaign(researcher, name="Offline", start=False)
    offline.algorithm = "offline"
    series = {
        seeded.pk: selectors.win_rate_series(seeded),
        offline.pk: [
            selectors.WinRatePoint(n, w, w, w, 0, 8, "oracle")
            for n, w in [(16, 0.5), (64, 0.75), (256, 0.875)]
        ],
    }
    rows = selectors.extrapolation([seeded, offline], series, target=0.9)
    assert rows[0].ratio == pytest.approx(4.0)
    assert rows[1].ratio == pytest.approx(1.0)


def test_acquisition_scores_per_round(seeded):
    groups = selectors.acquisition_scores(seeded)
    assert [g.round_index for g in groups] == [0, 1, 2]
    assert groups[0].scores == pytest.approx([0.01, 0.04])


def test_rounds_timeline_durations(seeded):
    rows = selectors.rounds_timeline(seeded)
    assert len(rows) == 3
    first = rows[0]
    assert first.duration_s == pytest.approx(15 * 60, abs=1)
    assert [s.state for s in first.segments] == [
        "generating",
        "selecting",
        "labeling",
        "learning",
        "evaluating",
    ]
    assert first.segments[2].seconds == pytest.approx(600)


def test_budget_overview_burn_rate_and_exhaustion(seeded):
    now = timezone.now()
    overview = selectors.budget_overview(seeded, now=now)
    # 12 human + 6 judge labels, all in the last minute: the rate divides by one minute
    # (the shortest span counted).
    assert overview.status.labels_spent == 18
    assert overview.burn.labels_per_day == pytest.approx(18 * 1440)
    # 22 labels left at 18 a minute.
    expected = now + dt.timedelta(days=22 / (18 * 1440))
    assert abs((overview.labels_exhausted_on - expected).total_seconds()) < 1
    assert overview.spent_fraction == pytest.approx(18 / 40)


def test_spend_by_source(seeded):
    human, judge = selectors.spend_by_source(seeded)
    assert (human.labels, human.amount) == (12, Decimal("6.00"))
    assert (judge.labels, judge.amount, judge.tokens) == (6, Decimal("0.06"), 630)


def test_throughput_per_annotator(seeded, annotator):
    agreement = selectors.human_judge_agreement(seeded)
    rows = {r.username: r for r in selectors.annotator_throughput(seeded, agreement=agreement)}
    anna = rows[annotator.username]
    assert anna.labels == 6 and anna.today == 6
    assert anna.median_seconds == pytest.approx(2.0)
    assert anna.labels_per_hour == pytest.approx(1800)
    assert anna.skip_rate is None  # seeded labels have no leases
    assert anna.agreement == pytest.approx(4 / 6)


def test_ledger_filters(seeded, annotator):
    assert selectors.ledger_entries(seeded).count() == 18
    assert selectors.ledger_entries(seeded, source="judge").count() == 6
    assert selectors.ledger_entries(seeded, annotator=annotator.username).count() == 6
    today = timezone.now().date()
    assert selectors.ledger_entries(seeded, until=today - dt.timedelta(days=1)).count() == 0


def test_annotators_cannot_read_research_or_budget_data(seeded, annotator):
    with pytest.raises(PermissionDenied):
        selectors.get_campaign_for_researcher(annotator, seeded.pk)
    with pytest.raises(PermissionDenied):
        selectors.get_campaign_for_budget(annotator, seeded.pk)


def test_a_researcher_sees_only_their_campaigns(seeded, db):
    other = make_user("rob", "researcher")
    with pytest.raises(NotFound):
        selectors.get_campaign_for_researcher(other, seeded.pk)
    with pytest.raises(NotFound):
        selectors.get_campaigns_for_researcher(other, [seeded.pk])
    assert list(selectors.research_campaigns(other)) == []
    assert selectors.budget_campaigns(other) == []


def test_admin_sees_every_campaign(seeded, admin_user):
    assert selectors.get_campaign_for_budget(admin_user, seeded.pk) == seeded
    assert seeded in selectors.budget_campaigns(admin_user)


def test_both_bad_is_left_out_of_the_human_share_as_in_training(seeded, annotator):
    # c3: anna said tie, otto A; the judge's P(A) is 0.7. As "both bad", anna's label has no
    # training target, so the human share of A is otto's alone (1.0, gap 0.3), while kappa
    # still counts it as "no preference", exactly like the tie it replaces.
    before = selectors.human_judge_agreement(seeded)
    Label.objects.filter(campaign=seeded, annotator=annotator, choice="tie").update(
        choice="both_bad"
    )
    after = selectors.human_judge_agreement(seeded)
    c3 = next(r for r in after.disagreements if r.prompt == "Seeded prompt 3?")
    assert c3.human_share_a == pytest.approx(1.0)
    assert c3.gap == pytest.approx(0.3)
    assert after.kappa == pytest.approx(before.kappa)
    assert after.agreement == pytest.approx(before.agreement)
