from django.apps import AppConfig


class InsightsConfig(AppConfig):
    name = "rlhf_platform.insights"
    label = "insights"
    verbose_name = "Researcher and admin views"
