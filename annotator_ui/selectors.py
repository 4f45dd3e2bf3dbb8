"""Reads the annotator pages need that the domain selectors do not offer.

Each is one query, whatever the number of campaigns or labels, so the home page and the
labeling page keep a bounded query count (asserted in the tests).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.selectors import campaigns_visible_to
from rlhf_platform.errors import NotFound
from rlhf_platform.labeling.models import Comparison, ComparisonState, Label, Lease
from rlhf_platform.rounds.models import Round


def utc_day_start(now: dt.datetime | None = None) -> dt.datetime:
    """Start of the current UTC day: "today" here is the day of the budgets' daily cap."""
    now = now or timezone.now()
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class LabelCounts:
    today: int
    total: int


def annotator_label_counts(*, annotator: User, campaign_id: int) -> LabelCounts:
    counts = Label.objects.filter(campaign_id=campaign_id, annotator=annotator).aggregate(
        total=Count("id"), today=Count("id", filter=Q(created_at__gte=utc_day_start()))
    )
    return LabelCounts(today=counts["today"], total=counts["total"])


def _count(qs: QuerySet) -> Coalesce:
    """A correlated COUNT(*) of ``qs`` (already filtered on ``OuterRef('pk')``)."""
    counted = qs.order_by().values("campaign_id").annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def campaigns_for_annotator(user: User) -> QuerySet[Campaign]:
    """The campaigns ``user`` labels in (is a member of), with what the home page shows.

    Annotated: ``current_round`` (latest round index or None), ``open_comparisons``,
    ``my_labels_total``, ``my_labels_today``; the budget comes along (``select_related``).
    """
    mine = Label.objects.filter(campaign_id=OuterRef("pk"), annotator=user)
    return (
        campaigns_visible_to(user)
        .filter(memberships__user=user)
        .select_related("budget")
        .annotate(
            current_round=Subquery(
                Round.objects.filter(campaign_id=OuterRef("pk"))
                .order_by("-index")
                .values("index")[:1]
            ),
            open_comparisons=_count(
                Comparison.objects.filter(
                    campaign_id=OuterRef("pk"),
                    state__in=[ComparisonState.QUEUED, ComparisonState.LEASED],
                )
            ),
            my_labels_total=_count(mine),
            my_labels_today=_count(mine.filter(created_at__gte=utc_day_start())),
        )
        .order_by("name")
    )


def lease_with_pair(user: User, lease_id: int) -> Lease:
    """The caller's lease with its comparison, prompt and both responses, in one query
    (what :func:`rlhf_platform.labeling.selectors.lease_display` reads)."""
    lease = (
        Lease.objects.filter(pk=lease_id, annotator=user)
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b")
        .first()
    )
    if lease is None:
        raise NotFound("No such lease.", code="lease_not_found")
    return lease
