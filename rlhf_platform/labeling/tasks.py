"""Celery tasks of the labeling app (thin wrappers over services)."""

from __future__ import annotations

from celery import shared_task

from rlhf_platform.labeling.services import leases_release_expired


@shared_task(
    name="labeling.release_expired_leases",
    acks_late=True,
    time_limit=120,
    soft_time_limit=100,
    ignore_result=True,
)
def release_expired_leases() -> int:
    """Periodic (Celery beat): free the slots of leases whose time ran out."""
    return leases_release_expired()
