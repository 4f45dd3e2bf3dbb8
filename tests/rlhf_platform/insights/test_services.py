"""Audited admin actions: pausing a campaign and changing its caps."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rlhf_platform.budgets.models import Budget
from rlhf_platform.errors import Conflict, InvalidInput, PermissionDenied
from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.insights.services import budget_change_caps, campaign_pause_audited

pytestmark = pytest.mark.django_db


def test_pause_and_resume_write_one_entry_each(researcher, campaign):
    campaign_pause_audited(actor=researcher, campaign=campaign, action="pause")
    campaign_pause_audited(actor=researcher, campaign=campaign, action="resume")
    assert list(AuditEntry.objects.order_by("id").values_list("action", "before", "after")) == [
        ("pause", {"state": "running"}, {"state": "paused"}),
        ("resume", {"state": "paused"}, {"state": "running"}),
    ]


def test_a_refused_transition_leaves_no_entry(researcher, campaign):
    with pytest.raises(Conflict):
        campaign_pause_audited(actor=researcher, campaign=campaign, action="resume")
    with pytest.raises(InvalidInput):
        campaign_pause_audited(actor=researcher, campaign=campaign, action="finish")
    assert not AuditEntry.objects.exists()


def test_only_managers_act(annotator, campaign):
    with pytest.raises(PermissionDenied):
        campaign_pause_audited(actor=annotator, campaign=campaign, action="pause")
    with pytest.raises(PermissionDenied):
        budget_change_caps(actor=annotator, campaign=campaign, changes={"label_cap": "9"})


def test_caps_change_records_only_what_changed(researcher, campaign):
    entry = budget_change_caps(
        actor=researcher,
        campaign=campaign,
        changes={
            "label_cap": "50",
            "cost_cap": "12.5",
            "annotator_daily_cap": "",
            "warn_fraction": "0.9",
        },
    )
    budget = Budget.objects.get(campaign=campaign)
    assert (budget.label_cap, budget.cost_cap) == (50, Decimal("12.5"))
    assert entry.before == {"label_cap": None, "cost_cap": None}
    assert entry.after == {"label_cap": 50, "cost_cap": "12.5"}
    assert (
        budget_change_caps(actor=researcher, campaign=campaign, changes={"label_cap": "50"}) is None
    )
    assert AuditEntry.objects.count() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"label_cap": "-1"},
        {"label_cap": "many"},
        {"warn_fraction": "1.5"},
        {"warn_fraction": ""},
        {"owner": "x"},
    ],
)
def test_bad_caps_are_refused(researcher, campaign, changes):
    with pytest.raises(InvalidInput):
        budget_change_caps(actor=researcher, campaign=campaign, changes=changes)
    assert not AuditEntry.objects.exists()
