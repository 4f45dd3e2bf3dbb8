"""Celery task of the raters app (a thin wrapper over its services)."""

from __future__ import annotations

from celery import shared_task

from rlhf_platform.raters.services import raters_refit


@shared_task(
    name="raters.refit",
    acks_late=True,  # idempotent: a refit of the same labels gives the same estimates
    time_limit=300,
    soft_time_limit=280,
    ignore_result=True,
)
def refit(campaign_id: int) -> int:
    """Refit the campaign's rater model (debounced by ``services.refit_soon``)."""
    row = raters_refit(campaign_id=campaign_id)
    return row.labels_fitted if row else 0
