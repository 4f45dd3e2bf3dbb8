from django.contrib import admin

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.insights.services import CAP_FIELDS


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = (
        "campaign",
        "label_cap",
        "labels_spent",
        "cost_cap",
        "cost_spent",
        "annotator_daily_cap",
    )
    # Caps change on the campaign's budget page, whose service writes the audit entry.
    readonly_fields = ("labels_spent", "cost_spent", *CAP_FIELDS)

    def has_add_permission(self, request) -> bool:
        return False  # a budget is created with its campaign


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "budget", "source", "annotator", "labels", "amount", "tokens")
    list_filter = ("source", "budget__campaign")
    date_hierarchy = "created_at"
    raw_id_fields = ("label",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the ledger is append-only
