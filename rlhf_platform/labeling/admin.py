from django.contrib import admin

from rlhf_platform.labeling.models import Comparison, JudgeCall, Label, Lease


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "campaign",
        "round",
        "state",
        "acquisition_rule",
        "acquisition_score",
        "labels_count",
        "labels_required",
        "leased_count",
        "priority",
    )
    list_filter = ("state", "acquisition_rule", "campaign")
    raw_id_fields = (
        "round",
        "prompt",
        "response_a",
        "response_b",
        "policy_version",
        "reward_version",
    )


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ("id", "comparison", "annotator", "state", "swapped", "created_at", "expires_at")
    list_filter = ("state", "campaign")
    raw_id_fields = ("comparison",)


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "comparison",
        "campaign",
        "source",
        "annotator",
        "judge_name",
        "choice",
        "shown_swapped",
        "time_taken_ms",
        "cost",
        "created_at",
    )
    list_filter = ("source", "choice", "campaign")
    search_fields = ("annotator__username", "rationale")
    raw_id_fields = ("comparison", "lease")
    date_hierarchy = "created_at"


@admin.register(JudgeCall)
class JudgeCallAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "comparison",
        "judge_name",
        "valid",
        "choice",
        "prob_a",
        "attempt",
        "tokens_in",
        "tokens_out",
        "created_at",
    )
    list_filter = ("valid", "judge_name")
    search_fields = ("invalid_reason",)
    raw_id_fields = ("comparison",)
