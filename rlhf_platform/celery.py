"""The Celery app, configured from Django settings (``CELERY_*``).

Queues by resource: ``gpu`` (generation, training), ``judge`` (network-bound, run with high
concurrency), ``default`` (bookkeeping such as lease expiry). JSON serialization only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu.entity import Queue
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")


def _guard_redis_channel_of_closed_connection() -> None:
    """A Redis restart must not kill a worker that has a task in flight.

    With kombu 5.7 / Celery 5.7, when a worker loses the broker while it holds an
    unacknowledged message (``acks_late``: every task in flight), the consumer first
    ``collect()``s the broken connection, which drops the transport's ``client``, and then
    ``close()``s it. If the first close of the channel failed half-way (the pending read or
    the delete of the control fanout queue hit the dead socket), the second one tries to put
    the unacknowledged message back on a channel whose transport is gone, kombu raises
    ``AttributeError: 'NoneType' object has no attribute 'hostname'``, Celery does not
    count that as a connection error, and the worker exits with "Unrecoverable error"
    instead of reconnecting (found by bench/soak). Here a channel of a closed connection
    raises Redis's ``ConnectionError`` instead, which kombu and Celery ignore while they
    tear the connection down; the message stays in Redis's unacked set and is redelivered
    after the visibility timeout (and a lost round step is resent by ``rounds.sweep``).
    """
    original: Callable[..., dict[str, Any]] = kombu_redis.Channel._connparams
    if getattr(original, "guarded", False):
        return

    def _connparams(self: kombu_redis.Channel, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection of this channel is closed"
            )
        return original(self, asynchronous=asynchronous)

    _connparams.guarded = True  # type: ignore[attr-defined]  # a mark on the function
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]  # the patch


_guard_redis_channel_of_closed_connection()

app = Celery("rlhf_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name, routing_key=name) for name in ("default", "gpu", "judge")]
app.autodiscover_tasks()
app.autodiscover_tasks(["ml_worker"])
