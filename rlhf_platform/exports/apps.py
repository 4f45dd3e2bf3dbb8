from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "rlhf_platform.exports"
    label = "exports"
    verbose_name = "Exports and imports"
