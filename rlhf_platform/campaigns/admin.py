from django import forms
from django.contrib import admin, messages

from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.egress import judge_config_check
from rlhf_platform.campaigns.models import Campaign, JudgeHost, Membership, Prompt
from rlhf_platform.campaigns.services import STATE_ACTIONS
from rlhf_platform.errors import InvalidInput, ServiceError
from rlhf_platform.insights.services import CAP_FIELDS, campaign_state_audited

# A campaign's state and caps change only through the services that write the audit entry
# (docs/operations.md): the admin shows them read-only once the campaign exists, changes the
# state with the actions below and sends caps to the budget page.


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


class BudgetInline(admin.StackedInline):
    model = Budget
    can_delete = False
    readonly_fields = ("labels_spent", "cost_spent")

    def get_readonly_fields(self, request, obj=None):
        # Caps are set when the campaign is created; later changes go through the budget
        # page (insights: budget_change_caps), which writes the audit entry.
        return (*self.readonly_fields, *CAP_FIELDS) if obj is not None else self.readonly_fields


def _state_action(action: str):
    def change_state(modeladmin, request, queryset):
        for campaign in queryset:
            try:
                campaign = campaign_state_audited(
                    actor=request.user, campaign=campaign, action=action
                )
            except ServiceError as exc:
                modeladmin.message_user(request, f"{campaign}: {exc.message}", messages.WARNING)
            else:
                modeladmin.message_user(request, f"{campaign} is {campaign.state}")

    change_state.__name__ = f"{action}_campaigns"
    return admin.action(description=f"{action.capitalize()} the selected campaigns")(change_state)


class CampaignAdminForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = "__all__"  # noqa: DJ007 (the admin edits every field)

    def clean_judge_config(self):
        config = self.cleaned_data.get("judge_config")
        try:
            judge_config_check(config)
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from None
        return config


@admin.register(JudgeHost)
class JudgeHostAdmin(admin.ModelAdmin):
    """The allow-list of hosts that campaigns' API judges may call (docs/security.md)."""

    list_display = ("host", "allow_private_addresses", "note", "created_at")
    list_filter = ("allow_private_addresses",)
    search_fields = ("host", "note")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignAdminForm
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
    # New campaigns start as drafts; the actions change the state through the audited service.
    readonly_fields = ("state",)
    actions = tuple(_state_action(action) for action in STATE_ACTIONS)


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
