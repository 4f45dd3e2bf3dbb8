"""Campaigns and what they own: members, invites and prompts; the judge hosts allow-list.

A campaign's rounds, model versions, responses and evaluations are the round engine's
(``rlhf_platform.rounds.models``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Algorithm(models.TextChoices):
    OFFLINE = "offline", "Offline"
    PERIODIC = "periodic", "Periodic"
    ONLINE = "online", "Online"
    INFOMAX = "infomax", "Information-directed"


class FeedbackMode(models.TextChoices):
    HUMAN = "human", "Human"
    JUDGE = "judge", "Judge"
    MIXED = "mixed", "Mixed"


class AcquisitionRule(models.TextChoices):
    UNIFORM = "uniform", "Uniform random pair"
    INFOMAX = "infomax", "Max particle variance"
    DOUBLE_THOMPSON = "double_thompson", "Double Thompson sampling"
    BOLTZMANN = "boltzmann", "Boltzmann"
    IMPORTED = "imported", "Imported pair"


class CampaignState(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    FINISHED = "finished", "Finished"


class Campaign(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Shown to annotators beside each pair.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_campaigns"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="campaigns"
    )
    algorithm = models.CharField(
        max_length=16, choices=Algorithm.choices, default=Algorithm.INFOMAX
    )
    feedback_mode = models.CharField(
        max_length=8, choices=FeedbackMode.choices, default=FeedbackMode.HUMAN
    )
    acquisition_rule = models.CharField(
        max_length=16, choices=AcquisitionRule.choices, default=AcquisitionRule.INFOMAX
    )
    prompts_per_round = models.PositiveIntegerField(default=64)
    responses_per_prompt = models.PositiveIntegerField(default=16)
    labels_per_comparison = models.PositiveSmallIntegerField(
        default=1, help_text="Overlap: how many distinct annotators label each comparison."
    )
    judge_config = models.JSONField(default=dict, blank=True)
    policy_config = models.JSONField(default=dict, blank=True)
    reward_config = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=16, choices=CampaignState.choices, default=CampaignState.DRAFT
    )
    seed = models.BigIntegerField(default=0)
    max_rounds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Stop after this many rounds (empty: until the budget ends).",
    )
    eval_every = models.PositiveIntegerField(
        default=1, help_text="Evaluate the policy every N rounds (0: never)."
    )
    periodic_tau = models.PositiveIntegerField(
        default=4, help_text="Periodic algorithm: refit everything every tau rounds."
    )
    round_deadline_seconds = models.PositiveIntegerField(
        default=3600, help_text="A labeling round closes at this deadline, leftovers recorded."
    )
    mixed_fraction = models.FloatField(
        default=0.0, help_text="Mixed feedback: share of comparisons sent to the judge too."
    )
    # Switched together in one UPDATE once a round's new versions are registered.
    active_policy_version = models.ForeignKey(
        "rounds.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    active_reward_version = models.ForeignKey(
        "rounds.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_prompt__gte=2), name="campaign_k_at_least_2"
            ),
            models.CheckConstraint(
                condition=Q(labels_per_comparison__gte=1), name="campaign_overlap_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def runs_rounds(self) -> bool:
        """Live campaigns generate, select and learn in rounds; imported A/B ones do not."""
        return bool(self.policy_config.get("backend"))


class Membership(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.campaign}"


class Invite(models.Model):
    """A link that makes whoever opens it (logged in) a member of the campaign, until it
    expires or is revoked. Only a hash of the token is stored."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="invites")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invite to {self.campaign} until {self.expires_at:%Y-%m-%d %H:%M}"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    EVAL = "eval", "Eval"


class Prompt(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    messages = models.JSONField(
        null=True, blank=True, help_text="Optional chat history: [{role, content}, ...]."
    )
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    reference = models.TextField(blank=True, help_text="Optional reference answer.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["campaign", "split"])]

    def __str__(self) -> str:
        return self.text[:60]


class JudgeHost(models.Model):
    """A host that API judges may call: the admin-managed allow-list of judge endpoints.

    Campaigns configure their judge's ``base_url``; the request leaves from our workers, so
    only hosts listed here (and the providers' own API hosts) may be named, and a host may
    resolve to private, loopback or link-local addresses only when an admin says so here
    (a vLLM server on the internal network). See docs/security.md.
    """

    host = models.CharField(
        max_length=253,
        unique=True,
        help_text="Host name or IP address, without scheme or port (e.g. vllm.internal).",
    )
    allow_private_addresses = models.BooleanField(
        default=False,
        help_text="Allow this host to resolve to private, loopback or link-local addresses.",
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host + (" (private allowed)" if self.allow_private_addresses else "")

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Stored as the policy compares: lower case, no trailing dot, no IPv6 brackets.
        self.host = self.host.strip().rstrip(".").lower().removeprefix("[").removesuffix("]")
        super().save(*args, **kwargs)
