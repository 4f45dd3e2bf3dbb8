"""Where the next piece of round work goes: Celery (default) or an in-process queue.

Services call :func:`step` and :func:`judge` inside their transactions; the work is sent
only once the transaction commits (``transaction.on_commit``), so a task never sees rows
that are not there yet. ``inline()`` swaps in a local queue for foreground runs
(``manage.py run_rounds``, notebooks, tests) that need no worker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)

_inline_queue: collections.deque[tuple[str, int]] | None = None
#: The Celery task of each kind of work (``ml_worker.tasks``).
_TASK_NAMES = {
    "step": "rounds.step",
    "judge": "rounds.judge",
    "open": "rounds.open",
    "judge_trial": "judges.trial",
}


def _send(kind: str, object_id: int) -> None:
    if _inline_queue is not None:
        _inline_queue.append((kind, object_id))
        return
    # Sent by name: the web process never imports ml_worker.tasks (nor torch through it).
    # Queues come from CELERY_TASK_ROUTES, options such as acks_late from the worker's task.
    from rlhf_platform.celery import app

    try:
        app.send_task(_TASK_NAMES[kind], args=[object_id])
    except (BrokerError, OSError) as exc:
        # The broker is down. What the caller committed stands; the periodic sweep
        # (rounds.sweep) finds the round waiting and sends the work once the broker is back.
        log.warning("broker unavailable, %s %s left to the sweeper: %s", kind, object_id, exc)


def step(round_id: int) -> None:
    transaction.on_commit(lambda: _send("step", round_id))


def judge(round_id: int) -> None:
    transaction.on_commit(lambda: _send("judge", round_id))


def open_round(campaign_id: int) -> None:
    """Open the campaign's next round in a worker (it may load models: not in a request)."""
    transaction.on_commit(lambda: _send("open", campaign_id))


def judge_trial(trial_id: int) -> None:
    """Ask a worker to put one question to a judge configuration (the page's "try it")."""
    transaction.on_commit(lambda: _send("judge_trial", trial_id))


@contextlib.contextmanager
def inline() -> Iterator[Callable[[], tuple[str, int] | None]]:
    """Collect dispatched work locally; yields ``pop()`` giving the next item or None."""
    global _inline_queue
    previous, _inline_queue = _inline_queue, collections.deque()
    queue = _inline_queue
    try:
        yield lambda: queue.popleft() if queue else None
    finally:
        _inline_queue = previous
