from django.apps import AppConfig


class RoundsConfig(AppConfig):
    name = "rlhf_platform.rounds"
    label = "rounds"
