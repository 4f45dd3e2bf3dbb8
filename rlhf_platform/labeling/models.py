"""Comparisons served to annotators, their leases and the labels they produce.

Invariants held by the database, not only by code:
- a comparison never has more labels than required (``labels_count <= labels_required``,
  and leases are only handed out while ``labels_count + leased_count < labels_required``);
- one annotator labels a comparison at most once (unique constraint);
- a retried submit never makes a second label (unique idempotency key per annotator);
- one live lease per annotator and campaign (partial unique constraint).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from ml_worker.core import choice as core_choice
from rlhf_platform.campaigns.models import AcquisitionRule, Campaign, Prompt
from rlhf_platform.rounds.models import ModelVersion, Response, Round


class ComparisonState(models.TextChoices):
    QUEUED = "queued", "Queued"  # still has unleased slots
    LEASED = "leased", "Leased"  # every open slot is leased
    LABELED = "labeled", "Labeled"  # has all its labels
    EXPIRED = "expired", "Expired"  # its round closed before it was fully labeled


class Comparison(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="comparisons")
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.CASCADE, related_name="comparisons"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    acquisition_rule = models.CharField(
        max_length=16, choices=AcquisitionRule.choices, default=AcquisitionRule.UNIFORM
    )
    acquisition_score = models.FloatField(default=0.0)
    p_mean = models.FloatField(null=True, blank=True, help_text="Particle mean of P(A > B).")
    p_var = models.FloatField(null=True, blank=True, help_text="Particle variance of P(A > B).")
    policy_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reward_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    priority = models.FloatField(default=0.0, help_text="Higher is served first.")
    state = models.CharField(
        max_length=8, choices=ComparisonState.choices, default=ComparisonState.QUEUED
    )
    labels_required = models.PositiveSmallIntegerField(
        default=1, help_text="Human labels wanted (overlap); 0 when only the judge labels it."
    )
    judge_requested = models.BooleanField(
        default=False, help_text="The campaign's judge labels it too (judge or mixed feedback)."
    )
    labels_count = models.PositiveSmallIntegerField(default=0)
    leased_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]
        indexes = [
            models.Index(fields=["campaign", "state", "-priority", "id"], name="comparison_queue"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(labels_count__lte=F("labels_required")),
                name="comparison_labels_within_required",
            ),
            models.CheckConstraint(
                condition=Q(labels_count__gte=0) & Q(leased_count__gte=0),
                name="comparison_counts_non_negative",
            ),
            models.CheckConstraint(
                condition=~Q(response_a=F("response_b")), name="comparison_distinct_responses"
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk} ({self.state})"


class LeaseState(models.TextChoices):
    ACTIVE = "active", "Active"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Lease(models.Model):
    """One annotator's claim on one slot of a comparison, for a few minutes."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="leases")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases"
    )
    swapped = models.BooleanField(
        help_text="True when response B is shown on the left (as 'A') to this annotator."
    )
    state = models.CharField(max_length=10, choices=LeaseState.choices, default=LeaseState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "expires_at"], name="lease_expiry")]
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "campaign"],
                condition=Q(state="active"),
                name="lease_one_active_per_annotator_campaign",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} on {self.comparison_id} by {self.annotator_id} ({self.state})"


class Choice(models.TextChoices):
    """The database field's choices, read from the one definition of an answer
    (:class:`ml_worker.core.choice.Choice`: order, training target, analytics value)."""

    A = core_choice.Choice.A.value, core_choice.Choice.A.label
    B = core_choice.Choice.B.value, core_choice.Choice.B.label
    TIE = core_choice.Choice.TIE.value, core_choice.Choice.TIE.label
    BOTH_BAD = core_choice.Choice.BOTH_BAD.value, core_choice.Choice.BOTH_BAD.label


class LabelSource(models.TextChoices):
    HUMAN = "human", "Human"
    JUDGE = "judge", "Judge"


class Label(models.Model):
    """An answer to a comparison. ``choice`` is in the comparison's own A/B terms; what the
    annotator saw is ``shown_swapped`` (B was displayed first)."""

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="labels")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="labels")
    lease = models.OneToOneField(
        Lease, null=True, blank=True, on_delete=models.SET_NULL, related_name="label"
    )
    source = models.CharField(max_length=8, choices=LabelSource.choices, default=LabelSource.HUMAN)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="labels",
    )
    judge_name = models.CharField(max_length=100, blank=True)
    judge_prob_a = models.FloatField(null=True, blank=True, help_text="Judge's P(A > B).")
    choice = models.CharField(max_length=8, choices=Choice.choices)
    shown_swapped = models.BooleanField(default=False)
    rationale = models.TextField(blank=True)
    time_taken_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # A researcher's flag (reversible, audited): a flagged label stays in the database and
    # in the label browser, but training and exports leave it out.
    flagged_at = models.DateTimeField(null=True, blank=True)
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    flag_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["campaign", "annotator", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                condition=Q(annotator__isnull=False),
                name="label_one_per_annotator_comparison",
            ),
            models.UniqueConstraint(
                fields=["annotator", "idempotency_key"],
                condition=Q(annotator__isnull=False),
                name="label_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(source="judge") | Q(annotator__isnull=False),
                name="label_human_has_annotator",
            ),
            # A judge labels a comparison at most once, however often its task is re-run.
            models.UniqueConstraint(
                fields=["comparison", "judge_name"],
                condition=Q(source="judge"),
                name="label_one_per_judge_comparison",
            ),
        ]

    def __str__(self) -> str:
        return f"label {self.pk}: {self.choice} on {self.comparison_id}"


class JudgeCall(models.Model):
    """Every call to a judge, valid or not. Invalid answers are never labels."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judge_calls")
    judge_name = models.CharField(max_length=100)
    valid = models.BooleanField()
    invalid_reason = models.TextField(blank=True)
    prob_a = models.FloatField(null=True, blank=True)
    choice = models.CharField(max_length=8, blank=True)
    order_disagreement = models.BooleanField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.judge_name} on {self.comparison_id}: {'ok' if self.valid else 'invalid'}"
