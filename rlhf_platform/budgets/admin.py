from django.contrib import admin

from rlhf_platform.budgets.models import Budget, LedgerEntry


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
    readonly_fields = ("labels_spent", "cost_spent")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "budget", "source", "annotator", "labels", "amount", "tokens")
    list_filter = ("source", "budget__campaign")
    date_hierarchy = "created_at"
    raw_id_fields = ("label",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the ledger is append-only
