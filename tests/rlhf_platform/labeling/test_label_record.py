"""label_record: the one service that records a label and debits its cost (human labels from
label_submit, the judge's from the round engine), and the slot bookkeeping around it."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import transaction

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.errors import BudgetExhausted
from rlhf_platform.labeling.models import (
    Comparison,
    ComparisonState,
    Label,
    LabelSource,
    Lease,
    LeaseState,
)
from rlhf_platform.labeling.services import (
    comparison_hand_to_humans,
    comparison_next,
    label_record,
    label_submit,
    leases_expire_with_comparisons,
)
from tests.conftest import make_campaign

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[3]


def _judge(comparison, **extra):
    with transaction.atomic():
        locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
        return label_record(
            comparison=locked,
            source=LabelSource.JUDGE,
            choice="A",
            shown_swapped=False,
            idempotency_key=f"judge:{comparison.pk}",
            judge_name="oracle",
            judge_prob_a=0.8,
            **extra,
        )


def test_a_judge_label_respects_a_leased_human_slot(researcher, annotator):
    # Mixed feedback: one human slot, leased; the judge's label fills no human slot.
    campaign = make_campaign(researcher, pairs=1, members=(annotator,))
    Budget.objects.filter(campaign=campaign).update(
        judge_call_cost=Decimal("0.01"), judge_token_cost=Decimal("0.001")
    )
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    comparison = Comparison.objects.get()
    assert (comparison.state, comparison.leased_count) == (ComparisonState.LEASED, 1)
    label = _judge(comparison, tokens=100)
    comparison.refresh_from_db()
    assert (comparison.state, comparison.labels_count, comparison.leased_count) == (
        ComparisonState.LEASED,
        0,
        1,
    )
    # Priced once: the label's cost is the ledger's debit, call price plus its tokens.
    entry = LedgerEntry.objects.get(label=label)
    assert label.cost == entry.amount == Decimal("0.11") and entry.tokens == 100
    assert Budget.objects.get(campaign=campaign).labels_spent == 1
    # The human's answer then labels it.
    label_submit(annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key="k")
    comparison.refresh_from_db()
    assert (comparison.state, comparison.labels_count, comparison.leased_count) == (
        ComparisonState.LABELED,
        1,
        0,
    )


def test_a_judge_only_comparison_is_labeled_by_the_judge(researcher):
    make_campaign(researcher, pairs=1)
    Comparison.objects.update(labels_required=0, judge_requested=True)
    _judge(Comparison.objects.get())
    assert Comparison.objects.get().state == ComparisonState.LABELED


def test_a_refused_debit_writes_nothing(researcher):
    campaign = make_campaign(researcher, pairs=1, label_cap=0)
    Comparison.objects.update(labels_required=0, judge_requested=True)
    with pytest.raises(BudgetExhausted):
        _judge(Comparison.objects.get())
    assert not Label.objects.exists() and not LedgerEntry.objects.exists()
    assert Comparison.objects.get().state == ComparisonState.QUEUED
    assert Budget.objects.get(campaign=campaign).labels_spent == 0


def test_a_human_label_fills_its_leases_slot(researcher, annotator):
    campaign = make_campaign(researcher, pairs=1, members=(annotator,), overlap=2)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    with transaction.atomic():
        comparison = Comparison.objects.select_for_update().get()
        label = label_record(
            comparison=comparison,
            source=LabelSource.HUMAN,
            choice="tie",
            shown_swapped=lease.swapped,
            idempotency_key="h1",
            annotator=annotator,
            lease=lease,
        )
    comparison.refresh_from_db()
    assert (comparison.state, comparison.labels_count, comparison.leased_count) == (
        ComparisonState.QUEUED,  # one more slot is open (overlap 2)
        1,
        0,
    )
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.SUBMITTED
    assert label.cost == Decimal("0.10") == LedgerEntry.objects.get(label=label).amount


def test_expiring_a_rounds_comparisons_gives_their_slots_back(researcher, annotator):
    campaign = make_campaign(researcher, pairs=1, members=(annotator,))
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    comparison = Comparison.objects.get()
    with transaction.atomic():
        closed = leases_expire_with_comparisons(
            comparison_ids=[comparison.pk], now=lease.created_at
        )
    assert closed == 1
    comparison.refresh_from_db()
    assert (comparison.state, comparison.leased_count) == (ComparisonState.EXPIRED, 0)
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.EXPIRED


def test_handing_a_comparison_to_humans_keeps_its_leased_slots(researcher, annotator):
    campaign = make_campaign(researcher, pairs=1, members=(annotator,))
    comparison_next(annotator=annotator, campaign_id=campaign.pk)
    Comparison.objects.update(judge_requested=True)
    comparison_hand_to_humans(comparison_id=Comparison.objects.get().pk)
    comparison = Comparison.objects.get()
    assert not comparison.judge_requested
    assert comparison.state == ComparisonState.LEASED  # not reset to queued
    Comparison.objects.update(labels_required=0, judge_requested=True, leased_count=0)
    comparison_hand_to_humans(comparison_id=comparison.pk)
    comparison.refresh_from_db()
    assert (comparison.labels_required, comparison.state) == (1, ComparisonState.QUEUED)


def _calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            text = ast.unparse(node.func)
            if text in ("Label.objects.create", "budget_debit"):
                found.append(text)
    return found


def test_labels_are_written_and_debited_in_one_place():
    # The round engine (the judge's labels included) goes through label_record.
    for path in sorted((ROOT / "rlhf_platform/rounds").glob("*.py")):
        assert _calls(path) == [], path.name
    # In the labeling services, only label_record creates a label and debits it (the
    # hand-written SQL of labeling/pg.py is its twin for the submit hot path).
    tree = ast.parse((ROOT / "rlhf_platform/labeling/services.py").read_text())
    owners = {
        fn.name
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("Label.objects.create", "budget_debit")
    }
    assert owners == {"label_record"}
