from django.apps import AppConfig


class RatersConfig(AppConfig):
    name = "rlhf_platform.raters"
    label = "raters"
