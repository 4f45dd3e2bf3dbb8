"""Writes to budgets. Call :func:`budget_debit` inside the transaction that writes the label."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db.models import F, Sum
from django.utils import timezone

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.errors import BudgetExhausted


def budget_lock(*, campaign_id: int) -> Budget:
    """The campaign's budget row, locked until the end of the transaction.

    Locking this one row serializes debits of one campaign: the cap check and the
    increment below then see every earlier debit, so the cap holds exactly.
    """
    budget = Budget.objects.select_for_update().filter(campaign_id=campaign_id).first()
    if budget is None:  # every campaign gets one at creation; older ones get it here
        Budget.objects.get_or_create(campaign_id=campaign_id)
        budget = Budget.objects.select_for_update().get(campaign_id=campaign_id)
    return budget


def _utc_day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def budget_refusal(
    *, budget: Budget, source: str, annotator_id: int | None, tokens: int = 0
) -> BudgetExhausted | None:
    """Why one more label of ``source`` (a judge call of ``tokens`` tokens) may not be spent
    now (as the error to raise), or None if it may."""
    if budget.label_cap is not None and budget.labels_spent >= budget.label_cap:
        return BudgetExhausted(
            f"The campaign's label budget is spent ({budget.labels_spent} of {budget.label_cap})."
        )
    unit = unit_cost(budget=budget, source=source, tokens=tokens)
    if budget.cost_cap is not None and budget.cost_spent + unit > budget.cost_cap:
        return BudgetExhausted(
            f"The campaign's cost budget is spent ({budget.cost_spent} of {budget.cost_cap})."
        )
    if annotator_id is not None and budget.annotator_daily_cap is not None:
        # Counted from the ledger, the record of what was spent, under the budget lock.
        today = (
            LedgerEntry.objects.filter(
                budget=budget,
                annotator_id=annotator_id,
                created_at__gte=_utc_day_start(timezone.now()),
            ).aggregate(n=Sum("labels"))["n"]
            or 0
        )
        if today >= budget.annotator_daily_cap:
            return BudgetExhausted(
                f"You reached today's cap of {budget.annotator_daily_cap} labels for this campaign.",
                code="daily_cap_reached",
            )
    return None


def unit_cost(*, budget: Budget, source: str, tokens: int = 0) -> Decimal:
    """A human label at its unit price; a judge call at its per-call price plus its tokens
    (prompt and completion) at the per-token price."""
    if source == "human":
        return budget.human_label_cost
    return budget.judge_call_cost + budget.judge_token_cost * tokens


def budget_debit(
    *,
    budget: Budget,
    source: str,
    annotator_id: int | None,
    label_id: int | None,
    tokens: int = 0,
) -> LedgerEntry:
    """Debit one label from a budget locked with :func:`budget_lock`.

    Raises :class:`BudgetExhausted` (and writes nothing) when a cap would be exceeded.
    """
    refusal = budget_refusal(budget=budget, source=source, annotator_id=annotator_id, tokens=tokens)
    if refusal:
        raise refusal
    amount = unit_cost(budget=budget, source=source, tokens=tokens)
    Budget.objects.filter(pk=budget.pk).update(
        labels_spent=F("labels_spent") + 1, cost_spent=F("cost_spent") + amount
    )
    budget.labels_spent += 1
    budget.cost_spent += amount
    return LedgerEntry.objects.create(
        budget=budget,
        label_id=label_id,
        source=source,
        annotator_id=annotator_id,
        labels=1,
        amount=amount,
        tokens=tokens,
    )
