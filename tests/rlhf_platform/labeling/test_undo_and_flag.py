"""Undoing one's last label, and researchers' flags on labels (left out of training and
exports, reversible, audited)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.datafiles.exports import label_records, preference_records
from rlhf_platform.errors import Conflict, NotFound, PermissionDenied
from rlhf_platform.insights.models import AuditAction, AuditEntry
from rlhf_platform.insights.services import label_flag_set
from rlhf_platform.labeling.models import Comparison, ComparisonState, Label, Lease, LeaseState
from rlhf_platform.labeling.services import (
    comparison_next,
    label_submit,
    label_undo,
    last_undoable_label,
)
from rlhf_platform.rounds.learn import _labels_q
from rlhf_platform.rounds.models import Round, RoundState

pytestmark = pytest.mark.django_db


def _label(user, campaign, choice="A"):
    lease = comparison_next(annotator=user, campaign_id=campaign.pk).lease
    label, _ = label_submit(
        annotator=user, lease_id=lease.pk, choice=choice, idempotency_key=f"k-{lease.pk}"
    )
    return label


def test_undo_reopens_the_lease_credits_the_budget_and_allows_a_relabel(annotator, campaign):
    first = _label(annotator, campaign)
    next_lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    assert last_undoable_label(annotator=annotator, campaign_id=campaign.pk) == first

    lease = label_undo(annotator=annotator, label_id=first.pk)

    assert lease.pk == first.lease_id and lease.state == LeaseState.ACTIVE
    assert not Label.objects.filter(pk=first.pk).exists()
    comparison = Comparison.objects.get(pk=first.comparison_id)
    assert (comparison.labels_count, comparison.leased_count) == (0, 1)
    assert comparison.state == ComparisonState.LEASED  # overlap 1: its one slot is leased
    # The pair shown after the label went back to the queue, not skipped.
    assert Lease.objects.get(pk=next_lease.pk).state == LeaseState.EXPIRED
    budget = Budget.objects.get(campaign=campaign)
    assert budget.labels_spent == 0 and budget.cost_spent == 0
    amounts = sorted(e.amount for e in LedgerEntry.objects.filter(budget=budget))
    assert [str(a) for a in amounts] == ["-0.100000", "0.100000"]
    # Asking for the next pair serves the reopened lease; relabeling it works.
    assert comparison_next(annotator=annotator, campaign_id=campaign.pk).lease.pk == lease.pk
    again, created = label_submit(
        annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key="relabel"
    )
    assert created and again.choice == ("A" if lease.swapped else "B")
    assert Budget.objects.get(campaign=campaign).labels_spent == 1


def test_undo_refuses_after_the_window(annotator, campaign, settings):
    label = _label(annotator, campaign)
    Label.objects.filter(pk=label.pk).update(created_at=timezone.now() - dt.timedelta(seconds=31))
    with pytest.raises(Conflict) as exc:
        label_undo(annotator=annotator, label_id=label.pk)
    assert exc.value.code == "undo_window_passed"
    assert last_undoable_label(annotator=annotator, campaign_id=campaign.pk) is None
    settings.LABEL_UNDO_SECONDS = 0
    assert last_undoable_label(annotator=annotator, campaign_id=campaign.pk) is None


def test_undo_refuses_an_older_label_and_other_annotators_labels(
    annotator, other_annotator, campaign
):
    first = _label(annotator, campaign)
    _label(annotator, campaign)
    with pytest.raises(Conflict) as exc:
        label_undo(annotator=annotator, label_id=first.pk)
    assert exc.value.code == "undo_not_last"
    with pytest.raises(NotFound):
        label_undo(annotator=other_annotator, label_id=first.pk)


def test_undo_refuses_a_label_its_round_consumed(annotator, campaign):
    label = _label(annotator, campaign)
    rnd = Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)
    Comparison.objects.filter(pk=label.comparison_id).update(round=rnd)
    with pytest.raises(Conflict) as exc:
        label_undo(annotator=annotator, label_id=label.pk)
    assert exc.value.code == "undo_label_consumed"
    assert Label.objects.filter(pk=label.pk).exists()
    assert last_undoable_label(annotator=annotator, campaign_id=campaign.pk) is None


def test_a_flagged_label_leaves_exports_and_training_and_the_flag_is_reversible(
    researcher, annotator, campaign
):
    kept, flagged = _label(annotator, campaign), _label(annotator, campaign, "B")
    label_flag_set(
        actor=researcher, campaign=campaign, label_id=flagged.pk, flagged=True, reason="spam"
    )
    flagged.refresh_from_db()
    assert flagged.flagged_at is not None and flagged.flagged_by == researcher
    prefs = list(preference_records(campaign=campaign))
    a, b = "answer A4", "answer B4"
    chosen, rejected = (a, b) if kept.choice == "A" else (b, a)  # shown order is random
    assert prefs == [
        {"prompt": kept.comparison.prompt.text, "chosen": chosen, "rejected": rejected}
    ]
    assert [r["label_id"] for r in label_records(campaign=campaign)] == [kept.pk]
    assert list(_labels_q(campaign=campaign)) == [kept]
    entry = AuditEntry.objects.get(action=AuditAction.FLAG_LABEL)
    assert entry.actor == researcher and entry.after == {
        "label": flagged.pk,
        "flagged": True,
        "reason": "spam",
    }
    # Flagging again changes nothing; unflagging brings it back, audited.
    label_flag_set(actor=researcher, campaign=campaign, label_id=flagged.pk, flagged=True)
    assert AuditEntry.objects.filter(action=AuditAction.FLAG_LABEL).count() == 1
    label_flag_set(actor=researcher, campaign=campaign, label_id=flagged.pk, flagged=False)
    assert len(list(preference_records(campaign=campaign))) == 2
    assert AuditEntry.objects.filter(action=AuditAction.UNFLAG_LABEL).count() == 1


def test_only_managers_flag_labels(annotator, other_annotator, campaign):
    label = _label(annotator, campaign)
    with pytest.raises(PermissionDenied):
        label_flag_set(actor=other_annotator, campaign=campaign, label_id=label.pk, flagged=True)
    assert not AuditEntry.objects.exists()
