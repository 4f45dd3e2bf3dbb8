"""Admin actions on a campaign, each written together with its audit log entry."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.services import budget_lock
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.selectors import can_manage
from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.errors import InvalidInput, PermissionDenied
from rlhf_platform.insights.models import AuditAction, AuditEntry

CAP_FIELDS = ("label_cap", "cost_cap", "annotator_daily_cap", "warn_fraction")


def _check_manager(actor: User, campaign: Campaign) -> None:
    if not can_manage(actor, campaign):
        raise PermissionDenied("Only the campaign's owner or an admin may do this.")


@transaction.atomic
def campaign_pause_audited(*, actor: User, campaign: Campaign, action: str) -> Campaign:
    """Pause or resume ``campaign`` (see ``campaign_set_state``) and log who did it.

    The audit entry is written in the same transaction: a refused transition leaves none.
    """
    _check_manager(actor, campaign)
    if action not in (AuditAction.PAUSE, AuditAction.RESUME):
        raise InvalidInput("Use pause or resume.", code="invalid_action")
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
