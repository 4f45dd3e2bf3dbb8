from django.apps import AppConfig


class DatafilesConfig(AppConfig):
    """Data files in and out: prompt and pair imports, preference and label exports, their
    formats, and the commands that run them (issue 19: one app for what was spread over the
    campaigns services, an app named for half of it and two copies in the API)."""

    name = "rlhf_platform.datafiles"
    label = "datafiles"
    verbose_name = "Data files (imports and exports)"
