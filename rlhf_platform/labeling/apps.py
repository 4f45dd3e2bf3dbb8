from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "rlhf_platform.labeling"
    label = "labeling"
