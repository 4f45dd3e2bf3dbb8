from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from rlhf_platform.budgets.models import Budget
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.errors import BudgetExhausted
from rlhf_platform.labeling.services import comparison_next, label_submit
from tests.conftest import make_campaign

pytestmark = pytest.mark.django_db


def _label(user, campaign):
    lease = comparison_next(annotator=user, campaign_id=campaign.pk).lease
    return label_submit(
        annotator=user, lease_id=lease.pk, choice="A", idempotency_key=f"k{lease.pk}"
    )[0]


def test_status_warns_near_the_cap_and_says_when_it_is_spent(researcher, annotator):
    c = make_campaign(researcher, name="b", pairs=10, label_cap=10, members=(annotator,))
    for _ in range(8):
        _label(annotator, c)
    status = budget_status(campaign_id=c.pk)
    assert (status.labels_spent, status.labels_remaining, status.near_cap, status.exhausted) == (
        8,
        2,
        False,
        False,
    )
    _label(annotator, c)
    assert budget_status(campaign_id=c.pk).near_cap
    _label(annotator, c)
    status = budget_status(campaign_id=c.pk)
    assert status.exhausted and status.reason == "label cap reached"


def test_costs_are_debited_at_the_unit_price(researcher, annotator):
    c = make_campaign(
        researcher, name="cost", pairs=3, human_label_cost=Decimal("0.25"), members=(annotator,)
    )
    for _ in range(3):
        assert _label(annotator, c).cost == Decimal("0.25")
    assert budget_status(campaign_id=c.pk).cost_spent == Decimal("0.75")


def test_the_database_refuses_an_overspend_even_if_code_erred(researcher):
    c = make_campaign(researcher, name="db", pairs=1, label_cap=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.filter(campaign=c).update(labels_spent=2)


def test_a_judge_call_costs_its_call_price_plus_its_tokens(researcher):
    from rlhf_platform.budgets.services import budget_debit, budget_lock
    from rlhf_platform.campaigns.services import campaign_create

    c = campaign_create(
        owner=researcher,
        name="tokens",
        judge_call_cost=Decimal("0.001"),
        judge_token_cost=Decimal("0.000002"),
        cost_cap=Decimal("0.01"),
    )
    with transaction.atomic():
        entry = budget_debit(
            budget=budget_lock(campaign_id=c.pk),
            source="judge",
            annotator_id=None,
            label_id=None,
            tokens=1500,
        )
    assert entry.amount == Decimal("0.004") and entry.tokens == 1500
    status = budget_status(campaign_id=c.pk)
    assert status.cost_spent == Decimal("0.004")
    # 0.004 + 0.004 + a third call of 0.004 would pass the 0.01 cap: refused, nothing written
    with transaction.atomic():
        budget_debit(
            budget=budget_lock(campaign_id=c.pk),
            source="judge",
            annotator_id=None,
            label_id=None,
            tokens=1500,
        )
    with pytest.raises(BudgetExhausted) as exc, transaction.atomic():
        budget_debit(
            budget=budget_lock(campaign_id=c.pk),
            source="judge",
            annotator_id=None,
            label_id=None,
            tokens=1500,
        )
    assert exc.value.code == "budget_exhausted"
    assert budget_status(campaign_id=c.pk).cost_spent == Decimal("0.008")
