"""The audit log of the researchers' and admins' actions on a campaign (state changes,
caps, members, invite links, label flags)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from rlhf_platform.campaigns.models import Campaign


class AuditAction(models.TextChoices):
    START = "start", "Started the campaign"
    PAUSE = "pause", "Paused the campaign"
    RESUME = "resume", "Resumed the campaign"
    FINISH = "finish", "Finished the campaign"
    CHANGE_CAPS = "change_caps", "Changed the budget caps"
    FLAG_LABEL = "flag_label", "Flagged a label"
    UNFLAG_LABEL = "unflag_label", "Removed a label's flag"
    ADD_MEMBER = "add_member", "Added a member"
    REMOVE_MEMBER = "remove_member", "Removed a member"
    INVITE = "invite", "Created an invite link"
    EXCLUDE_RATER = "exclude_rater", "Excluded a rater"
    INCLUDE_RATER = "include_rater", "Included a rater again"
    MARK_GOLD = "mark_gold", "Marked a gold pair"
    GOLD_RATE = "gold_rate", "Changed the gold rate"


class AuditEntry(models.Model):
    """Who did what to a campaign, with the values before and after. Never edited."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="audit_entries"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="audit_entries")
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["campaign", "created_at"])]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.campaign} ({self.created_at:%Y-%m-%d %H:%M})"


# The one question a judge trial asks: an easy pair, so a working judge prefers A.
TRIAL_PAIR = {
    "prompt": "What is the capital of France? Answer in one sentence.",
    "response_a": "The capital of France is Paris.",
    "response_b": "France's capital is Lyon, a city famous for its food.",
    "reference": "Paris",
}


class JudgeTrialState(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    DONE = "done", "Answered"
    FAILED = "failed", "Failed"


class JudgeTrial(models.Model):
    """The "try it on one pair" of the New campaign page: a judge configuration asked one
    fixed question by a worker (the web process loads no model and calls no judge)."""

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    judge_config = models.JSONField(default=dict)
    state = models.CharField(
        max_length=8, choices=JudgeTrialState.choices, default=JudgeTrialState.PENDING
    )
    prob_a = models.FloatField(null=True, blank=True)
    choice = models.CharField(max_length=8, blank=True)
    message = models.TextField(blank=True, help_text="Why it is invalid or failed.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"judge trial {self.pk} ({self.state})"
