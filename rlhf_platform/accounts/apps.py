from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "rlhf_platform.accounts"
    label = "accounts"
