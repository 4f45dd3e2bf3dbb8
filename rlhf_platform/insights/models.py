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
