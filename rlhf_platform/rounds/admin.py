"""Admin pages of the round engine's models: rounds (with a retry action), model versions,
evaluations and responses.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from rlhf_platform.rounds.models import Evaluation, ModelVersion, Response, Round


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "kind", "round", "state", "artifact_path", "created_at")
    list_filter = ("kind", "state", "campaign")


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = (
        "campaign",
        "index",
        "state",
        "leftovers",
        "attempts",
        "started_at",
        "finished_at",
    )
    list_filter = ("state", "campaign")
    readonly_fields = ("transitions", "claim_token", "claimed_at", "failure_reason")
    actions = ("retry_failed",)

    @admin.action(description="Retry the selected failed rounds")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Round]) -> None:
        from rlhf_platform.errors import ServiceError
        from rlhf_platform.rounds.state import round_retry

        for rnd in queryset:
            try:
                round_retry(round_id=rnd.pk)
            except ServiceError as exc:
                self.message_user(request, f"round {rnd}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"round {rnd} sent back to work")


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = (
        "campaign",
        "round",
        "policy_version",
        "labels_spent",
        "win_rate",
        "ci_low",
        "ci_high",
        "n_prompts",
        "n_invalid",
    )
    list_filter = ("campaign",)


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "round", "source", "token_count", "created_at")
    list_filter = ("source", "prompt__campaign")
    search_fields = ("text",)
    raw_id_fields = ("prompt", "round", "policy_version")
