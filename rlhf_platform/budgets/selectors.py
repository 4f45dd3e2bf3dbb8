"""Reads of budgets."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rlhf_platform.budgets.models import Budget


@dataclass(frozen=True)
class BudgetStatus:
    label_cap: int | None
    labels_spent: int
    labels_remaining: int | None
    cost_cap: Decimal | None
    cost_spent: Decimal
    cost_remaining: Decimal | None
    annotator_daily_cap: int | None
    near_cap: bool
    exhausted: bool
    reason: str


def budget_status(*, campaign_id: int) -> BudgetStatus:
    budget, _ = Budget.objects.get_or_create(campaign_id=campaign_id)
    fractions = []
    exhausted_reasons = []
    if budget.label_cap is not None:
        fractions.append(budget.labels_spent / budget.label_cap if budget.label_cap else 1.0)
        if budget.labels_spent >= budget.label_cap:
            exhausted_reasons.append("label cap reached")
    if budget.cost_cap is not None:
        fractions.append(float(budget.cost_spent / budget.cost_cap) if budget.cost_cap else 1.0)
        if budget.cost_spent + budget.human_label_cost > budget.cost_cap:
            exhausted_reasons.append("cost cap reached")
    return BudgetStatus(
        label_cap=budget.label_cap,
        labels_spent=budget.labels_spent,
        labels_remaining=budget.labels_remaining,
        cost_cap=budget.cost_cap,
        cost_spent=budget.cost_spent,
        cost_remaining=budget.cost_remaining,
        annotator_daily_cap=budget.annotator_daily_cap,
        near_cap=bool(fractions) and max(fractions) >= budget.warn_fraction,
        exhausted=bool(exhausted_reasons),
        reason="; ".join(exhausted_reasons),
    )
