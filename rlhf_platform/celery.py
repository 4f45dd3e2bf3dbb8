"""The Celery app, configured from Django settings (``CELERY_*``).

Queues by resource: ``gpu`` (generation, training), ``judge`` (network-bound, run with high
concurrency), ``default`` (bookkeeping such as lease expiry). JSON serialization only.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")

app = Celery("rlhf_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name, routing_key=name) for name in ("default", "gpu", "judge")]
app.autodiscover_tasks()
app.autodiscover_tasks(["ml_worker"])
