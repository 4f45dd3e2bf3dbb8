"""The serving benchmark's own logic: its integrity checker and its percentiles.

The checker is run on crafted database states of our own schema (through the normal
pytest-django test database): a clean run passes; a duplicated label, a comparison over its
overlap, a wrong budget, a lost acknowledged label each make it fail. Label Studio is never
installed here.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import connection

from bench.serving.integrity import check_ours
from bench.serving.stats import percentile, summarize_ms
from rlhf_platform.budgets.models import Budget
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.labeling.services import comparison_next, label_submit
from tests.conftest import make_campaign, make_user


def test_percentile_matches_linear_interpolation():
    xs = [15, 20, 35, 40, 50]
    assert percentile(xs, 0) == 15
    assert percentile(xs, 100) == 50
    assert percentile(xs, 50) == 35
    assert percentile(xs, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile(list(reversed(range(1, 101))), 95) == pytest.approx(95.05)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_summarize_ms_converts_seconds():
    s = summarize_ms([0.001, 0.002, 0.003, 0.004])
    assert s["count"] == 4
    assert s["p50_ms"] == 2.5
    assert s["max_ms"] == 4.0
    assert summarize_ms([])["p99_ms"] is None


@pytest.fixture
def labeled(researcher):
    """A campaign of 3 comparisons x overlap 2, fully labeled by two annotators."""
    ann = [make_user("bench-a"), make_user("bench-b")]
    campaign = make_campaign(
        researcher, name="bench", pairs=3, overlap=2, members=tuple(ann), label_cap=6,
        human_label_cost=Decimal("0.25"),
    )  # fmt: skip
    acked = []
    for user in ann:
        for _ in range(3):
            lease = comparison_next(annotator=user, campaign_id=campaign.pk).lease
            label, created = label_submit(
                annotator=user, lease_id=lease.pk, choice="A", idempotency_key=uuid.uuid4().hex
            )
            assert created
            acked.append(label.pk)
    return campaign, acked


def _check(campaign, acked):
    with connection.cursor() as cur:
        return check_ours(cur, campaign.pk, acked)


def test_clean_run_passes(labeled):
    campaign, acked = labeled
    out = _check(campaign, acked)
    assert out["ok"], out
    assert out["acknowledged"] == out["stored"] == 6
    assert out["budget_exact"] and Decimal(out["budget"]["labels_x_unit_cost"]) == Decimal("1.50")


def test_lost_and_double_acknowledged_labels_fail(labeled):
    campaign, acked = labeled
    out = _check(campaign, [*acked, 10**9])
    assert not out["ok"] and out["acked_missing"] == [10**9]
    out = _check(campaign, [*acked, acked[0]])
    assert not out["ok"] and out["acked_twice"] == [acked[0]]


def test_duplicated_label_fails(labeled):
    """A second row for the same lease and key (the database's constraints dropped for the
    test, inside its transaction) is found."""
    campaign, acked = labeled
    first = Label.objects.get(pk=acked[0])
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks before ALTER
        cur.execute("ALTER TABLE labeling_label DROP CONSTRAINT labeling_label_lease_id_key")
        cur.execute("DROP INDEX label_one_per_annotator_comparison")
        cur.execute("DROP INDEX label_idempotency_key_unique")
    Label.objects.filter(pk=first.pk).update(cost=Decimal("0.25"))
    first.pk = None
    first.save()
    out = _check(campaign, acked)
    assert not out["ok"]
    assert out["duplicate_lease"] == 1
    assert out["duplicate_idempotency_key"] == 1
    assert out["duplicate_annotator_comparison"] == 1
    assert out["stored_not_acked"] == 1
    assert out["over_overlap"] == 1  # 3 label rows on a comparison that wants 2
    assert not out["budget_exact"]  # 7 labels, 6 debited


def test_over_overlap_counter_fails(labeled):
    campaign, acked = labeled
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cur.execute(
            "ALTER TABLE labeling_comparison DROP CONSTRAINT comparison_labels_within_required"
        )
    comparison = Comparison.objects.filter(campaign=campaign).first()
    Comparison.objects.filter(pk=comparison.pk).update(labels_count=3)
    out = _check(campaign, acked)
    assert not out["ok"] and out["over_overlap"] == 1 and out["counter_mismatch"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"labels_spent": 5},  # spent != ledger
        {"cost_spent": Decimal("1.25")},  # cost != ledger
        {"human_label_cost": Decimal("0.30")},  # ledger != labels x unit cost
    ],
)
def test_wrong_budget_fails(labeled, change):
    campaign, acked = labeled
    Budget.objects.filter(campaign=campaign).update(**change)
    out = _check(campaign, acked)
    assert not out["budget_exact"] and not out["ok"]
