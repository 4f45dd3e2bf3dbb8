"""The round engine's models: rounds, the responses they sample, the model versions they
use and produce, and the evaluations of those versions.

They were the campaigns app's until issue 19 and keep its tables (``db_table``): the move
changed Django's state only (``migrations/rounds/0001_initial.py``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ModelKind(models.TextChoices):
    POLICY = "policy", "Policy"
    REWARD = "reward", "Reward model"


class VersionState(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ModelVersion(models.Model):
    """A policy or reward-model artifact. Visible (READY) only once its files are complete."""

    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=8, choices=ModelKind.choices)
    round = models.ForeignKey(
        "Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_versions"
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    artifact_path = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=8, choices=VersionState.choices, default=VersionState.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "campaigns_modelversion"  # created by the campaigns app, before the move
        ordering = ["campaign", "kind", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "kind", "artifact_path"],
                condition=~Q(artifact_path=""),
                name="model_version_artifact_unique",
            ),
            # A round produces at most one version of each kind, even if its step is re-run.
            models.UniqueConstraint(
                fields=["round", "kind"],
                condition=Q(round__isnull=False),
                name="model_version_one_per_round_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} {self.kind} v{self.pk}"


class RoundState(models.TextChoices):
    GENERATING = "generating", "Generating"
    SELECTING = "selecting", "Selecting"
    LABELING = "labeling", "Labeling"
    LEARNING = "learning", "Learning"
    EVALUATING = "evaluating", "Evaluating"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Round(models.Model):
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="rounds"
    )
    index = models.PositiveIntegerField()
    state = models.CharField(
        max_length=12, choices=RoundState.choices, default=RoundState.GENERATING
    )
    policy_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reward_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    deadline = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    transitions = models.JSONField(
        default=list, blank=True, help_text="[[state, ISO timestamp], ...] in order."
    )
    # Who is working on the current state's step; a stale heartbeat lets another worker take
    # over after a crash (see rlhf_platform/rounds/state.py).
    claim_token = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    leftovers = models.PositiveIntegerField(
        default=0, help_text="Comparisons still unlabeled when the round closed."
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "campaigns_round"  # created by the campaigns app, before the move
        ordering = ["campaign", "index"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "index"], name="round_index_unique"),
            # One unfinished round per campaign: a failed round blocks until it is retried.
            models.UniqueConstraint(
                fields=["campaign"], condition=~Q(state="done"), name="round_one_open_per_campaign"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} round {self.index}"


class Response(models.Model):
    prompt = models.ForeignKey(
        "campaigns.Prompt", on_delete=models.CASCADE, related_name="responses"
    )
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.CASCADE, related_name="responses"
    )
    policy_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="responses"
    )
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    features_key = models.CharField(
        max_length=64, blank=True, help_text="Key of the cached backbone features (sha256)."
    )
    source = models.CharField(
        max_length=32, default="policy", help_text="policy, imported, or a model name."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "campaigns_response"  # created by the campaigns app, before the move
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:60]


class Evaluation(models.Model):
    """Win rate of a policy version against the initial policy on the eval prompts."""

    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="evaluations"
    )
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="evaluations")
    policy_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="evaluations"
    )
    labels_spent = models.PositiveIntegerField()
    win_rate = models.FloatField()
    ci_low = models.FloatField()
    ci_high = models.FloatField()
    n_prompts = models.PositiveIntegerField()
    n_invalid = models.PositiveIntegerField(default=0)
    judge = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "campaigns_evaluation"  # created by the campaigns app, before the move
        ordering = ["campaign", "labels_spent"]
        constraints = [
            models.UniqueConstraint(fields=["round"], name="evaluation_one_per_round"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} @ {self.labels_spent} labels: {self.win_rate:.3f}"
