"""Label budgets: caps per campaign (and per annotator per day), unit costs, and a ledger.

The spent counters live on the budget row; every debit locks that row, checks the caps,
and writes a ledger entry in the same transaction, so a cap holds exactly under any
concurrency. Check constraints make the database refuse an overspend even if code erred.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from rlhf_platform.campaigns.models import Campaign


class Budget(models.Model):
    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="budget")
    label_cap = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no cap.")
    cost_cap = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="Empty: no cap."
    )
    annotator_daily_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most labels one annotator may give per UTC day."
    )
    human_label_cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    judge_call_cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    judge_token_cost = models.DecimalField(
        max_digits=14,
        decimal_places=10,
        default=Decimal("0"),
        help_text="Price of one judge token (prompt or completion), added to the call price.",
    )
    warn_fraction = models.FloatField(default=0.9, help_text="Warn when this share is spent.")
    labels_spent = models.PositiveIntegerField(default=0)
    cost_spent = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(label_cap__isnull=True) | Q(labels_spent__lte=F("label_cap")),
                name="budget_labels_within_cap",
            ),
            models.CheckConstraint(
                condition=Q(cost_cap__isnull=True) | Q(cost_spent__lte=F("cost_cap")),
                name="budget_cost_within_cap",
            ),
        ]

    def __str__(self) -> str:
        return f"budget of {self.campaign}"

    @property
    def labels_remaining(self) -> int | None:
        return None if self.label_cap is None else self.label_cap - self.labels_spent

    @property
    def cost_remaining(self) -> Decimal | None:
        return None if self.cost_cap is None else self.cost_cap - self.cost_spent


class LedgerEntry(models.Model):
    """One debit (or, with a negative amount, a correction). Never edited."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="ledger")
    label = models.OneToOneField(
        "labeling.Label",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_entry",
    )
    source = models.CharField(max_length=8)  # human / judge
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    labels = models.IntegerField(default=1)
    amount = models.DecimalField(max_digits=12, decimal_places=6)
    tokens = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["budget", "created_at"])]

    def __str__(self) -> str:
        return f"{self.source} {self.amount} ({self.created_at:%Y-%m-%d %H:%M})"
