from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "rlhf_platform.budgets"
    label = "budgets"
