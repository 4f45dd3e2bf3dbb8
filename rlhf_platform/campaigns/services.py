"""Writes to campaigns: creation, membership, state changes, prompt and pair imports."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ml_worker.core.campaign_config import policy_config_problem, reward_config_problem
from rlhf_platform import limits
from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.definition import BUDGET_FIELDS, DEFINITION_FIELDS
from rlhf_platform.campaigns.egress import judge_config_check
from rlhf_platform.campaigns.models import Campaign, CampaignState, Invite, Membership
from rlhf_platform.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from rlhf_platform.rounds import dispatch

# action -> (states it may start from, state it leads to)
STATE_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "start": ((CampaignState.DRAFT,), CampaignState.RUNNING),
    "pause": ((CampaignState.RUNNING,), CampaignState.PAUSED),
    "resume": ((CampaignState.PAUSED,), CampaignState.RUNNING),
    "finish": (
        (CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED),
        CampaignState.FINISHED,
    ),
}


@transaction.atomic
def campaign_create(*, owner: User, name: str, **values: Any) -> Campaign:
    """Create a campaign in the draft state, with its budget.

    ``values``: any field of the one definition
    (:data:`~rlhf_platform.campaigns.definition.DEFINITION_FIELDS`: the campaign's own and
    its budget's); omitted ones take the models' defaults. Callers from outside (API, spec,
    page) validate with :func:`~rlhf_platform.campaigns.definition.campaign_validate` first.
    """
    unknown = sorted(set(values) - set(DEFINITION_FIELDS))
    if unknown:  # a caller's bug, not a user's input: the definition is the list
        raise TypeError(f"campaign_create() got unknown setting(s) {unknown}")
    budget = {k: values[k] for k in BUDGET_FIELDS if k in values}
    fields = {k: v for k, v in values.items() if k not in BUDGET_FIELDS}
    if not owner.is_researcher:
        raise PermissionDenied("Only researchers and admins create campaigns.")
    problem = limits.value_problem({"name": name, **fields})
    if problem:  # spec files and the admin reach here without the API's serializers
        raise InvalidInput(f"The campaign {problem}.", code="invalid_text")
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named {name!r} exists already.", code="name_taken")
    judge_config_check(fields.get("judge_config"))
    # Checked here too for callers without the definition's serializer (the admin's form).
    for key, check in (
        ("policy_config", policy_config_problem),
        ("reward_config", reward_config_problem),
    ):
        problem = check(fields.get(key) or {})
        if problem:
            raise InvalidInput(problem, code=f"invalid_{key}")
    campaign = Campaign(owner=owner, name=name, **fields)
    campaign.full_clean()
    campaign.save()
    Budget.objects.create(campaign=campaign, **budget)
    return campaign


def campaign_add_member(*, campaign: Campaign, user: User) -> Membership:
    membership, _ = Membership.objects.get_or_create(campaign=campaign, user=user)
    return membership


@transaction.atomic
def campaign_remove_member(*, campaign: Campaign, user: User) -> bool:
    """Remove ``user`` from the campaign; their live leases there go back to the queue.
    Their labels stay. Returns whether they were a member."""
    from rlhf_platform.labeling.services import leases_release_for

    deleted, _ = Membership.objects.filter(campaign=campaign, user=user).delete()
    leases_release_for(annotator=user, campaign_id=campaign.pk)
    return bool(deleted)


def _invite_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite_create(*, campaign: Campaign, created_by: User, hours: int) -> tuple[Invite, str]:
    """A new invite link's row and its secret token (shown once; only its hash is kept)."""
    if not 1 <= hours <= 24 * 30:
        raise InvalidInput("An invite lasts 1 hour to 30 days.", code="invalid_invite_hours")
    token = secrets.token_urlsafe(24)
    invite = Invite.objects.create(
        campaign=campaign,
        token_hash=_invite_hash(token),
        created_by=created_by,
        expires_at=timezone.now() + dt.timedelta(hours=hours),
    )
    return invite, token


@transaction.atomic
def invite_accept(*, token: str, user: User) -> Campaign:
    """Make ``user`` a member of the invite's campaign, if the link is still valid."""
    invite = (
        Invite.objects.select_for_update()
        .select_related("campaign")
        .filter(token_hash=_invite_hash(token))
        .first()
    )
    if invite is None or invite.revoked_at is not None:
        raise NotFound("This invite link is not valid.", code="invite_not_found")
    if invite.expires_at <= timezone.now():
        raise Conflict("This invite link has expired; ask for a new one.", code="invite_expired")
    campaign_add_member(campaign=invite.campaign, user=user)
    Invite.objects.filter(pk=invite.pk).update(uses=F("uses") + 1)
    return invite.campaign


def invite_revoke(*, invite: Invite) -> None:
    Invite.objects.filter(pk=invite.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def campaign_set_state(*, campaign: Campaign, action: str) -> Campaign:
    """Apply ``action`` (start, pause, resume, finish) with a conditional UPDATE, so two
    concurrent requests cannot both succeed from the same state."""
    if action not in STATE_ACTIONS:
        raise InvalidInput(
            f"Unknown action {action!r}; use one of {', '.join(STATE_ACTIONS)}.",
            code="invalid_action",
        )
    sources, target = STATE_ACTIONS[action]
    changed = Campaign.objects.filter(pk=campaign.pk, state__in=sources).update(state=target)
    campaign.refresh_from_db()
    if not changed:
        raise Conflict(
            f"Cannot {action} a campaign that is {campaign.state}.", code="invalid_transition"
        )
    if target == CampaignState.RUNNING and campaign.runs_rounds:
        dispatch.open_round(campaign.pk)
    return campaign


# The imports of prompts and pairs live in rlhf_platform.datafiles.imports (issue 19: one app
# for data files in and out); re-exported here for callers not moved yet
# (bench/label_efficiency/parity.py, branches in flight).
from rlhf_platform.datafiles.imports import (  # noqa: E402 (after the definitions it builds on)
    comparisons_import_pairs as comparisons_import_pairs,
)
from rlhf_platform.datafiles.imports import prompts_import as prompts_import  # noqa: E402
