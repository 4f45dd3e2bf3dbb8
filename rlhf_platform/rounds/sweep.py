"""Sweeping: overdue labeling rounds, lost messages, dead workers; and taking back the
steps of an interrupted run at start (``manage.py resume_rounds``).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.labeling.models import JudgeCall
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.judge import needs_judge, round_try_close
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.opening import campaign_open_round


def rounds_sweep(*, idle_seconds: int | None = None) -> dict[str, int]:
    """Periodic: close overdue labeling rounds, re-dispatch rounds whose step nobody holds
    (a lost message) or whose claim went stale (a dead worker), re-send the judge of labeling
    rounds it left idle with comparisons still waiting for it (a lost message), open rounds
    for running campaigns that have none."""
    idle = idle_seconds if idle_seconds is not None else settings.ROUND_CLAIM_STALE_SECONDS
    cutoff = timezone.now() - dt.timedelta(seconds=idle)
    counts = {"closed": 0, "redispatched": 0, "judge_redispatched": 0, "opened": 0}
    for rnd in Round.objects.filter(state=RoundState.LABELING):
        if round_try_close(round_id=rnd.pk) == RoundState.LEARNING:
            counts["closed"] += 1
        elif _judge_idle_since(rnd) < cutoff and needs_judge(rnd.pk).exists():
            # The judge's message got lost (the broker restarted empty, or the worker died
            # between committing the round's move to labeling and sending it): without this
            # the round would wait for its deadline (an hour by default) with nobody on it.
            with transaction.atomic():
                dispatch.judge(rnd.pk)
            counts["judge_redispatched"] += 1
    working = [
        RoundState.GENERATING,
        RoundState.SELECTING,
        RoundState.LEARNING,
        RoundState.EVALUATING,
    ]
    for rnd in Round.objects.filter(state__in=working):
        # An unclaimed step whose message got lost, or a claim whose worker died.
        since = rnd.claimed_at if rnd.claim_token else _last_transition_time(rnd)
        if since is None or since < cutoff:
            with transaction.atomic():
                dispatch.step(rnd.pk)
            counts["redispatched"] += 1
    for campaign in Campaign.objects.filter(state=CampaignState.RUNNING).exclude(policy_config={}):
        if not campaign.rounds.exclude(state=RoundState.DONE).exists():
            if campaign_open_round(campaign_id=campaign.pk) is not None:
                counts["opened"] += 1
    return counts


def rounds_resume_interrupted() -> list[Round]:
    """Take back every round step left claimed by a worker that is gone, and send it again.

    For a start when **no worker of this database is running**: the embedded demo calls it
    (``manage.py resume_rounds`` in ``scripts/demo.sh``) before it starts its own worker,
    so a round interrupted by Ctrl-C resumes at once instead of after
    ``ROUND_CLAIM_STALE_SECONDS`` (10 minutes by default). With workers running elsewhere
    it would take their claims from under them (their advance would then be refused, and
    the step done twice): scale-out deployments rely on the stale-claim sweep instead.
    A step's work is redone from its start; every step is idempotent (responses of a
    crashed attempt are replaced, versions registered once).
    """
    working = [
        RoundState.GENERATING,
        RoundState.SELECTING,
        RoundState.LEARNING,
        RoundState.EVALUATING,
    ]
    resumed = []
    for rnd in Round.objects.filter(state__in=working).order_by("id"):
        with transaction.atomic():
            Round.objects.filter(pk=rnd.pk).update(claim_token="", claimed_at=None)
            dispatch.step(rnd.pk)
        resumed.append(rnd)
    for rnd in Round.objects.filter(state=RoundState.LABELING).order_by("id"):
        if needs_judge(rnd.pk).exists():
            with transaction.atomic():
                dispatch.judge(rnd.pk)
            resumed.append(rnd)
    return resumed


def _judge_idle_since(rnd: Round) -> dt.datetime:
    """When the judge last worked on the round (or, if never, when it started labeling)."""
    last_call = (
        JudgeCall.objects.filter(comparison__round=rnd)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    moved = _last_transition_time(rnd)
    times = [t for t in (last_call, moved) if t is not None]
    return max(times) if times else timezone.now()


def _last_transition_time(rnd: Round) -> dt.datetime | None:
    if not rnd.transitions:
        return None
    return parse_datetime(rnd.transitions[-1][1])
