"""Reads of comparisons and leases, through the caller's permissions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypedDict

from django.db.models import F, QuerySet
from django.utils import timezone

from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.services import budget_refusal
from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.errors import Conflict, NotFound, ServiceError
from rlhf_platform.labeling.models import (
    Comparison,
    ComparisonState,
    Label,
    LabelSource,
    Lease,
    LeaseState,
)
from rlhf_platform.rounds.models import Response

NOTHING_WAITING = "Nothing is waiting for you now; the next round is being prepared."
ALL_BEING_WORKED_ON = "Every remaining label of the budget is being worked on; try again shortly."


class NothingToLabel(NotFound):
    """No comparison is waiting for this annotator now (the next round may bring some)."""

    code = "nothing_queued"


@dataclass(frozen=True)
class LabelingStatus:
    """Where an annotator stands in a campaign, read without leasing anything.

    ``lease``: their live lease (with its pair), if they hold one. Otherwise ``refusal`` is
    the error :func:`~rlhf_platform.labeling.services.comparison_next` would raise now
    (campaign not running, budget or daily cap spent, nothing queued), or None when a
    comparison is waiting for them: the page offers a "next pair" button that leases it.
    """

    lease: Lease | None = None
    refusal: ServiceError | None = None


def labeling_status(*, annotator: User, campaign_id: int) -> LabelingStatus:
    """The labeling page's GET: what :func:`comparison_next` would do, without its writes
    (it is polled every few seconds, so it must lease nothing). Raises NotFound for a
    campaign the user does not label in."""
    campaign = (
        Campaign.objects.filter(pk=campaign_id, memberships__user=annotator)
        .select_related("budget")
        .first()
    )
    if campaign is None:
        raise NotFound("No such campaign.")
    now = timezone.now()
    lease = (
        Lease.objects.filter(
            annotator=annotator, campaign=campaign, state=LeaseState.ACTIVE, expires_at__gt=now
        )
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b")
        .first()
    )
    if lease is not None:
        return LabelingStatus(lease=lease)
    if campaign.state != CampaignState.RUNNING:
        return LabelingStatus(
            refusal=Conflict(
                f"The campaign is {campaign.state}, not running.", code="campaign_not_running"
            )
        )
    budget = campaign.budget
    refusal = budget_refusal(budget=budget, source=LabelSource.HUMAN, annotator_id=annotator.pk)
    if refusal is not None:
        return LabelingStatus(refusal=refusal)
    if budget.label_cap is not None:
        outstanding = Lease.objects.filter(
            campaign=campaign, state=LeaseState.ACTIVE, expires_at__gt=now
        ).count()
        if budget.labels_spent + outstanding >= budget.label_cap:
            return LabelingStatus(refusal=NothingToLabel(ALL_BEING_WORKED_ON))
    if not comparisons_waiting_for(annotator, campaign).exists():
        return LabelingStatus(refusal=NothingToLabel(NOTHING_WAITING))
    return LabelingStatus()


def comparisons_waiting_for(annotator: User, campaign: Campaign) -> QuerySet[Comparison]:
    """The campaign's comparisons with an open slot that ``annotator`` has neither labeled
    nor skipped (the ones :func:`comparison_next` may lease to them), best first.

    Both exclusions are bounded to this campaign (its comparisons are all there is to
    exclude), not to the annotator's whole history across campaigns."""
    seen = Lease.objects.filter(
        annotator=annotator, campaign=campaign, state__in=[LeaseState.SUBMITTED, LeaseState.SKIPPED]
    ).values("comparison_id")
    return (
        Comparison.objects.filter(campaign=campaign, state=ComparisonState.QUEUED)
        .filter(labels_count__lt=F("labels_required") - F("leased_count"))
        .exclude(pk__in=seen)
        .exclude(
            pk__in=Label.objects.filter(annotator=annotator, campaign=campaign).values(
                "comparison_id"
            )
        )
        .order_by("-priority", "id")
    )


def get_lease_for_annotator(user: User, lease_id: int, *, for_update: bool = False) -> Lease:
    """The caller's own lease. Another annotator's lease is reported as not found."""
    qs: QuerySet[Lease] = Lease.objects.filter(pk=lease_id, annotator=user)
    if for_update:
        qs = qs.select_for_update()
    lease = qs.select_related("comparison").first()
    if lease is None:
        raise NotFound("No such lease.", code="lease_not_found")
    return lease


class LeaseDisplay(TypedDict):
    """The pair as one annotator is shown it (the API's lease body, the labeling page)."""

    lease_id: int
    campaign_id: int
    expires_at: dt.datetime
    prompt: str
    messages: list[dict[str, str]] | None
    response_a: str
    response_b: str


def lease_display(lease: Lease) -> LeaseDisplay:
    """What the annotator sees: responses in the lease's shown order, never the mapping."""
    comparison = lease.comparison
    left, right = comparison.response_a, comparison.response_b
    if lease.swapped:
        left, right = right, left
    prompt = comparison.prompt
    return {
        "lease_id": lease.pk,
        "campaign_id": lease.campaign_id,
        "expires_at": lease.expires_at,
        "prompt": prompt.text,
        "messages": prompt.messages,
        "response_a": left.text,
        "response_b": right.text,
    }


def get_label_for_annotator(user: User, label_id: int) -> Label:
    """The caller's own label. Another annotator's label is reported as not found."""
    label = Label.objects.filter(pk=label_id, annotator=user).first()
    if label is None:
        raise NotFound("No such label.", code="label_not_found")
    return label


def cut_off_at(response: Response, policy_config: object) -> int | None:
    """The generation limit a policy response stopped at (it was cut off there), or None.

    A response's token count includes the end-of-sequence token when the policy stopped by
    itself, so a count at the campaign's ``max_new_tokens`` means the limit cut it.
    """
    limit = policy_config.get("max_new_tokens") if isinstance(policy_config, dict) else None
    backend = policy_config.get("backend") if isinstance(policy_config, dict) else None
    if backend in (None, "", "pool") or response.source != "policy":
        return None
    if limit is None:
        limit = 64  # ml_worker.core.learner's default
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        return None
    return limit if response.token_count >= limit > 0 else None
