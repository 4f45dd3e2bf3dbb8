"""Raters of a campaign (each annotator, each judge): their estimated quality, exclusions,
and gold pairs (comparisons whose answer is known).

A rater is named by a key: ``user:<id>`` for an annotator, ``judge:<name>`` for a judge.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.labeling.models import Choice, Comparison


class RaterSettings(models.Model):
    """A campaign's gold mixing rate and the last fit of its rater model."""

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, related_name="rater_settings"
    )
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of an annotator's new pairs drawn from the gold pairs."
    )
    #: Rater key -> ``RaterEstimate.to_dict()`` of the last fit.
    estimates = models.JSONField(default=dict, blank=True)
    #: ``RaterFit.previous()``: where the next refit starts from.
    warm_start = models.JSONField(default=dict, blank=True)
    labels_fitted = models.PositiveIntegerField(default=0)
    iterations = models.PositiveIntegerField(default=0)
    fitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1),
                name="rater_settings_gold_rate_share",
            )
        ]

    def __str__(self) -> str:
        return f"raters of {self.campaign_id}"


class RaterExclusion(models.Model):
    """A rater left out of training and exports (reversible: the row is deleted; the audit
    log keeps both actions)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    rater = models.CharField(max_length=120)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    judge_name = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "rater"], name="rater_exclusion_unique"),
            models.CheckConstraint(
                condition=Q(annotator__isnull=False) | ~Q(judge_name=""),
                name="rater_exclusion_names_a_rater",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rater} excluded from {self.campaign_id}"


class GoldPair(models.Model):
    """A comparison with a known answer, served to annotators like any other pair.

    ``comparison`` is the pair that is served: outside every round, with
    ``labels_required = 0`` so the ordinary queue never hands it out (only the gold mixing
    of ``rlhf_platform.raters.gold`` does) and a submit recognizes it without a query.
    ``source`` is the ordinary comparison it was marked from in the label browser, if any
    (annotators who labeled that one are not served its gold copy).
    """

    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, related_name="gold")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    source = models.OneToOneField(
        Comparison, null=True, blank=True, on_delete=models.CASCADE, related_name="gold_copy"
    )
    answer = models.CharField(max_length=8, choices=Choice.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"gold {self.comparison_id}: {self.answer}"
