"""Researcher and admin actions on a campaign, each written together with its audit log
entry in one transaction (a refused action leaves no entry): state changes, caps, members,
invite links, label flags."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.services import budget_lock
from rlhf_platform.campaigns.egress import judge_config_check
from rlhf_platform.campaigns.models import Campaign, Invite
from rlhf_platform.campaigns.selectors import can_manage
from rlhf_platform.campaigns.services import (
    STATE_ACTIONS,
    campaign_add_member,
    campaign_remove_member,
    campaign_set_state,
    invite_create,
    invite_revoke,
)
from rlhf_platform.errors import InvalidInput, NotFound, PermissionDenied
from rlhf_platform.insights.models import AuditAction, AuditEntry, JudgeTrial
from rlhf_platform.labeling.models import Label
from rlhf_platform.rounds import dispatch

CAP_FIELDS = ("label_cap", "cost_cap", "annotator_daily_cap", "warn_fraction")


def _check_manager(actor: User, campaign: Campaign) -> None:
    if not can_manage(actor, campaign):
        raise PermissionDenied("Only the campaign's owner or an admin may do this.")


@transaction.atomic
def campaign_state_audited(*, actor: User, campaign: Campaign, action: str) -> Campaign:
    """Start, pause, resume or finish ``campaign`` (see ``campaign_set_state``) and log who
    did it. The audit entry is written in the same transaction: a refused transition
    leaves none."""
    _check_manager(actor, campaign)
    if action not in STATE_ACTIONS:
        raise InvalidInput(
            f"Unknown action {action!r}; use one of {', '.join(STATE_ACTIONS)}.",
            code="invalid_action",
        )
    before = campaign.state
    campaign = campaign_set_state(campaign=campaign, action=action)
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=action,
        before={"state": before},
        after={"state": campaign.state},
    )
    return campaign


def campaign_pause_audited(*, actor: User, campaign: Campaign, action: str) -> Campaign:
    """Pause or resume only (the budget page's buttons)."""
    if action not in (AuditAction.PAUSE, AuditAction.RESUME):
        raise InvalidInput("Use pause or resume.", code="invalid_action")
    return campaign_state_audited(actor=actor, campaign=campaign, action=action)


@transaction.atomic
def member_add_audited(*, actor: User, campaign: Campaign, user: User) -> bool:
    """Add ``user`` to the campaign; returns False (and logs nothing) if already a member."""
    _check_manager(actor, campaign)
    if campaign.memberships.filter(user=user).exists():
        return False
    campaign_add_member(campaign=campaign, user=user)
    AuditEntry.objects.create(
        actor=actor, campaign=campaign, action=AuditAction.ADD_MEMBER, after={"user": user.username}
    )
    return True


@transaction.atomic
def member_remove_audited(*, actor: User, campaign: Campaign, user: User) -> None:
    _check_manager(actor, campaign)
    if not campaign_remove_member(campaign=campaign, user=user):
        raise NotFound(f"{user.username} is not a member.", code="not_a_member")
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.REMOVE_MEMBER,
        before={"user": user.username},
    )


@transaction.atomic
def invite_create_audited(*, actor: User, campaign: Campaign, hours: int) -> tuple[Invite, str]:
    """A new invite link (its token is returned once) and the audit entry."""
    _check_manager(actor, campaign)
    invite, token = invite_create(campaign=campaign, created_by=actor, hours=hours)
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.INVITE,
        after={"invite": invite.pk, "expires_at": invite.expires_at.isoformat()},
    )
    return invite, token


@transaction.atomic
def invite_revoke_audited(*, actor: User, campaign: Campaign, invite_id: int) -> None:
    _check_manager(actor, campaign)
    invite = Invite.objects.filter(pk=invite_id, campaign=campaign).first()
    if invite is None:
        raise NotFound("No such invite.", code="invite_not_found")
    invite_revoke(invite=invite)
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.INVITE,
        before={"invite": invite.pk},
        after={"revoked": True},
    )


@transaction.atomic
def label_flag_set(
    *, actor: User, campaign: Campaign, label_id: int, flagged: bool, reason: str = ""
) -> Label:
    """Flag a label (left out of training and exports from now on) or remove its flag.

    Reversible and audited; flagging a flagged label (or unflagging an unflagged one)
    changes nothing and logs nothing. Rounds already trained keep what they learned.
    """
    _check_manager(actor, campaign)
    label = Label.objects.select_for_update().filter(pk=label_id, campaign=campaign).first()
    if label is None:
        raise NotFound("No such label.", code="label_not_found")
    if len(reason) > 200:
        raise InvalidInput("The reason is at most 200 characters.", code="invalid_reason")
    if bool(label.flagged_at) == flagged:
        return label
    before = {"label": label.pk, "flagged": bool(label.flagged_at), "reason": label.flag_reason}
    if flagged:
        label.flagged_at, label.flagged_by, label.flag_reason = timezone.now(), actor, reason
    else:
        label.flagged_at, label.flagged_by, label.flag_reason = None, None, ""
    label.save(update_fields=["flagged_at", "flagged_by", "flag_reason"])
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.FLAG_LABEL if flagged else AuditAction.UNFLAG_LABEL,
        before=before,
        after={"label": label.pk, "flagged": flagged, "reason": label.flag_reason},
    )
    return label


def _json(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _parse_caps(changes: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in CAP_FIELDS:
            raise InvalidInput(f"Unknown cap {key!r}.", code="invalid_cap")
        if value in (None, ""):
            if key == "warn_fraction":
                raise InvalidInput("The warning threshold cannot be empty.", code="invalid_cap")
            parsed[key] = None  # no cap
            continue
        try:
            if key == "cost_cap":
                number: Any = Decimal(str(value))
            elif key == "warn_fraction":
                number = float(value)
            else:
                number = int(value)
        except (ValueError, InvalidOperation):
            raise InvalidInput(
                f"{key} must be a number, not {value!r}.", code="invalid_cap"
            ) from None
        if key == "warn_fraction" and not 0 < number <= 1:
            raise InvalidInput("The warning threshold is a share in (0, 1].", code="invalid_cap")
        if number < 0 or (isinstance(number, Decimal) and not number.is_finite()):
            raise InvalidInput(f"{key} cannot be negative.", code="invalid_cap")
        parsed[key] = number
    return parsed


@transaction.atomic
def budget_change_caps(
    *, actor: User, campaign: Campaign, changes: dict[str, Any]
) -> AuditEntry | None:
    """Raise (or lower, never below what is spent) a campaign's caps; empty means no cap.

    Runs under the budget row lock that every debit takes, so a cap is never set below a
    debit that lands concurrently. Returns the audit entry, with the before and after values
    of the caps that changed, or None when none did (nothing is written then).
    """
    _check_manager(actor, campaign)
    parsed = _parse_caps(changes)
    budget = budget_lock(campaign_id=campaign.pk)
    if parsed.get("label_cap") is not None and parsed["label_cap"] < budget.labels_spent:
        raise InvalidInput(
            f"The label cap cannot go below the {budget.labels_spent} labels already spent.",
            code="cap_below_spent",
        )
    if parsed.get("cost_cap") is not None and parsed["cost_cap"] < budget.cost_spent:
        raise InvalidInput(
            f"The cost cap cannot go below the {budget.cost_spent} already spent.",
            code="cap_below_spent",
        )
    parsed = {k: v for k, v in parsed.items() if v != getattr(budget, k)}
    if not parsed:
        return None
    before = {k: _json(getattr(budget, k)) for k in parsed}
    for key, value in parsed.items():
        setattr(budget, key, value)
    budget.save(update_fields=[*parsed, "updated_at"])
    return AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.CHANGE_CAPS,
        before=before,
        after={k: _json(getattr(budget, k)) for k in parsed},
    )


@transaction.atomic
def judge_trial_request(*, actor: User, judge_config: dict[str, Any]) -> JudgeTrial:
    """Queue one fixed question to ``judge_config`` on a worker (the page polls the trial).
    The endpoint is checked against the allow-list here, as at campaign creation."""
    if not actor.is_researcher:
        raise PermissionDenied("Only researchers and admins try judges.")
    if not judge_config.get("kind"):
        raise InvalidInput("Pick a judge to try.", code="invalid_judge")
    judge_config_check(judge_config)
    trial = JudgeTrial.objects.create(created_by=actor, judge_config=judge_config)
    dispatch.judge_trial(trial.pk)
    return trial
