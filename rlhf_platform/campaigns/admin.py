from django.contrib import admin

from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.models import (
    Campaign,
    Membership,
    ModelVersion,
    Prompt,
    Response,
    Round,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


class BudgetInline(admin.StackedInline):
    model = Budget
    can_delete = False
    readonly_fields = ("labels_spent", "cost_spent")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "algorithm",
        "acquisition_rule",
        "feedback_mode",
        "state",
        "created_at",
    )
    list_filter = ("state", "algorithm", "feedback_mode", "acquisition_rule")
    search_fields = ("name", "description")
    inlines = (BudgetInline, MembershipInline)
    autocomplete_fields = ("owner",)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("campaign", "user", "created_at")
    list_filter = ("campaign",)
    search_fields = ("user__username", "campaign__name")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "split", "short_text", "created_at")
    list_filter = ("split", "campaign")
    search_fields = ("text",)

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:80]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "kind", "round", "state", "artifact_path", "created_at")
    list_filter = ("kind", "state", "campaign")


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("campaign", "index", "state", "started_at", "finished_at")
    list_filter = ("state", "campaign")
    readonly_fields = ("transitions",)


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "round", "source", "token_count", "created_at")
    list_filter = ("source", "prompt__campaign")
    search_fields = ("text",)
    raw_id_fields = ("prompt", "round", "policy_version")
