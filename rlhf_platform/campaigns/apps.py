from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "rlhf_platform.campaigns"
    label = "campaigns"
