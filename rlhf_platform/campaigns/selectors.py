"""Reads of campaigns, always through the caller's permissions."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.errors import NotFound, PermissionDenied
from rlhf_platform.labeling.models import ComparisonState
from rlhf_platform.rounds.models import Round


def campaigns_visible_to(user: User) -> QuerySet[Campaign]:
    """Admins see every campaign; others the ones they own or belong to."""
    qs = Campaign.objects.all()
    if user.is_platform_admin:
        return qs
    return qs.filter(Q(owner=user) | Q(memberships__user=user)).distinct()


def can_manage(user: User, campaign: Campaign) -> bool:
    return user.is_platform_admin or (user.is_researcher and campaign.owner_id == user.pk)


def get_campaign_for_user(user: User, campaign_id: int, *, manage: bool = False) -> Campaign:
    """The campaign if ``user`` may see it (and manage it, with ``manage``).

    A campaign the user may not see is reported as not found, so IDs cannot be probed.
    """
    campaign = campaigns_visible_to(user).filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound("No such campaign.")
    if manage and not can_manage(user, campaign):
        raise PermissionDenied("Only the campaign's owner or an admin may do this.")
    return campaign


def get_round_for_user(user: User, round_id: int, *, manage: bool = False) -> Round:
    """The round if ``user`` may see its campaign (and manage it, with ``manage``).

    A round of a campaign the user may not see is reported exactly like a missing round.
    """
    rnd = (
        Round.objects.filter(pk=round_id, campaign__in=campaigns_visible_to(user))
        .select_related("campaign")
        .first()
    )
    if rnd is None:
        raise NotFound("No such round.")
    if manage and not can_manage(user, rnd.campaign):
        raise PermissionDenied("Only the campaign's owner or an admin may do this.")
    return rnd


@dataclass(frozen=True)
class CampaignProgress:
    rounds: int
    current_round: int | None
    comparisons: int
    comparisons_open: int
    comparisons_labeled: int
    labels: int
    prompts_train: int
    prompts_eval: int


def campaign_progress(campaign: Campaign) -> CampaignProgress:
    # Gold pairs (issue 20) measure raters; they are not the campaign's work.
    comps = campaign.comparisons.filter(gold__isnull=True).aggregate(
        total=Count("id"),
        open=Count("id", filter=Q(state__in=[ComparisonState.QUEUED, ComparisonState.LEASED])),
        labeled=Count("id", filter=Q(state=ComparisonState.LABELED)),
    )
    prompts = campaign.prompts.aggregate(
        train=Count("id", filter=Q(split="train")), eval=Count("id", filter=Q(split="eval"))
    )
    last_round = campaign.rounds.order_by("-index").values_list("index", flat=True).first()
    return CampaignProgress(
        rounds=campaign.rounds.count(),
        current_round=last_round,
        comparisons=comps["total"],
        comparisons_open=comps["open"],
        comparisons_labeled=comps["labeled"],
        labels=campaign.labels.count(),
        prompts_train=prompts["train"],
        prompts_eval=prompts["eval"],
    )


def get_user_by_username(username: str) -> User:
    """An active user, to add to a campaign. Managers may learn whether a username exists."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise NotFound(f"No active user named {username!r}.", code="user_not_found")
    return user
