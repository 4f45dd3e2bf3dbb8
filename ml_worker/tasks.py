"""Celery tasks of online rounds: thin wrappers over ``rlhf_platform.rounds.services``.

They take IDs, are enqueued on commit (``rlhf_platform.rounds.dispatch``), acknowledge late
(each step is idempotent: a redelivered message re-claims or finds nothing to do), retry
only named transient errors, and leave the round's state final or retryable: a step that
raises anything else marks the round failed with its reason.
"""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from rlhf_platform.rounds import services
from rlhf_platform.rounds.state import round_fail

# What every round task shares: late acknowledgement (each step is idempotent, so a message
# redelivered after a worker died is safe), retries with backoff for transient database
# errors only, no result stored.
ROUND_TASK = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": services.TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 120,
    "max_retries": 8,
    "ignore_result": True,
}


@shared_task(name="rounds.step", time_limit=3600, soft_time_limit=3500, **ROUND_TASK)
def round_step(round_id: int) -> str | None:
    """Generate, select, close, learn or evaluate: whatever the round's state asks for."""
    try:
        return services.round_step(round_id=round_id)
    except SoftTimeLimitExceeded:
        round_fail(round_id=round_id, reason="time limit exceeded")
        return None


@shared_task(name="rounds.judge", bind=True, time_limit=1800, soft_time_limit=1700, **ROUND_TASK)
def judge_round(self, round_id: int) -> int:
    """Let the judge label the round's comparisons; retry later while answers were invalid."""
    pending = services.round_judge(round_id=round_id)
    if pending:
        raise self.retry(countdown=min(60, 5 * (self.request.retries + 1)), max_retries=20)
    return 0


@shared_task(name="rounds.open", time_limit=1800, soft_time_limit=1700, **ROUND_TASK)
def open_round(campaign_id: int) -> int | None:
    """Open a running campaign's next round (writing its initial versions the first time)."""
    rnd = services.campaign_open_round(campaign_id=campaign_id)
    return rnd.pk if rnd else None


@shared_task(name="rounds.sweep", time_limit=300, soft_time_limit=280, ignore_result=True)
def sweep_rounds() -> dict[str, int]:
    """Periodic (beat): close overdue rounds, recover lost or abandoned steps."""
    return services.rounds_sweep()


@shared_task(name="judges.trial", time_limit=180, soft_time_limit=150, ignore_result=True)
def judge_trial(trial_id: int) -> str:
    """The "try it on one pair" of the New campaign page: always finalizes the trial."""
    return services.judge_trial_run(trial_id=trial_id)
