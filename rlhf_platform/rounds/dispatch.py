"""Where the next piece of round work goes: Celery (default) or an in-process queue.

Services call :func:`step` and :func:`judge` inside their transactions; the work is sent
only once the transaction commits (``transaction.on_commit``), so a task never sees rows
that are not there yet. ``inline()`` swaps in a local queue for foreground runs
(``manage.py run_rounds``, notebooks, tests) that need no worker.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

from django.db import transaction

_inline_queue: collections.deque[tuple[str, int]] | None = None


def _send(kind: str, round_id: int) -> None:
    if _inline_queue is not None:
        _inline_queue.append((kind, round_id))
        return
    from ml_worker import tasks

    task = tasks.round_step if kind == "step" else tasks.judge_round
    task.delay(round_id)


def step(round_id: int) -> None:
    transaction.on_commit(lambda: _send("step", round_id))


def judge(round_id: int) -> None:
    transaction.on_commit(lambda: _send("judge", round_id))


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
