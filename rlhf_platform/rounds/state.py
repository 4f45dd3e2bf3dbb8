"""The round state machine, kept in the database.

generating -> selecting -> labeling -> learning -> evaluating -> done, or failed from any.

A worker *claims* a round's current step with a conditional UPDATE (the round is in the
expected state and nobody holds a fresh claim), does the work, and *advances* with another
conditional UPDATE that only its own claim token can satisfy. So two workers never both
advance one round, and a worker killed mid-step leaves a claim that goes stale after
``ROUND_CLAIM_STALE_SECONDS`` and is then taken over (by a redelivered task or the sweeper).
A step keeps its claim fresh with :func:`beat` and moves on with :func:`advance`; both raise
:class:`ClaimLost` once another worker has taken the step over.

Torch-free: the web process imports this module (retrying a failed round).
"""

from __future__ import annotations

import datetime as dt
import secrets

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from rlhf_platform.errors import Conflict, NotFound
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState

WORK_STATES = (
    RoundState.GENERATING,
    RoundState.SELECTING,
    RoundState.LABELING,
    RoundState.LEARNING,
    RoundState.EVALUATING,
)


class ClaimLost(Exception):
    """Another worker took over this round's step (ours was presumed dead)."""


def new_token() -> str:
    return secrets.token_hex(8)


def _stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.ROUND_CLAIM_STALE_SECONDS)


def round_claim(*, round_id: int, state: str, token: str) -> bool:
    """Take the step of ``state``; True if this caller now owns it."""
    now = timezone.now()
    return bool(
        Round.objects.filter(pk=round_id, state=state)
        .filter(Q(claim_token="") | Q(claimed_at__lt=_stale_before()))
        .update(claim_token=token, claimed_at=now, attempts=F("attempts") + 1)
    )


def round_heartbeat(*, round_id: int, token: str) -> bool:
    """Keep a long step's claim fresh; False if the claim was lost (stop working)."""
    return bool(
        Round.objects.filter(pk=round_id, claim_token=token).update(claimed_at=timezone.now())
    )


def _append_transition(round_id: int, state: str) -> None:
    rnd = Round.objects.get(pk=round_id)
    rnd.transitions = [*rnd.transitions, [state, timezone.now().isoformat()]]
    fields = ["transitions"]
    if state in (RoundState.DONE, RoundState.FAILED):
        rnd.finished_at = timezone.now()
        fields.append("finished_at")
    rnd.save(update_fields=fields)


def round_advance(*, round_id: int, token: str, from_state: str, to_state: str) -> bool:
    """Move the claimed round on and release the claim; False if the claim was lost."""
    changed = Round.objects.filter(pk=round_id, state=from_state, claim_token=token).update(
        state=to_state, claim_token="", claimed_at=None, attempts=0
    )
    if changed:
        _append_transition(round_id, to_state)
    return bool(changed)


def beat(rnd: Round, token: str) -> None:
    """A step's heartbeat: raises :class:`ClaimLost` if the claim was taken over."""
    if not round_heartbeat(round_id=rnd.pk, token=token):
        raise ClaimLost()


def advance(rnd: Round, token: str, to_state: str) -> str:
    """A step's advance from the state it claimed: raises :class:`ClaimLost` if refused."""
    if not round_advance(round_id=rnd.pk, token=token, from_state=rnd.state, to_state=to_state):
        raise ClaimLost()
    return to_state


def round_release(*, round_id: int, token: str) -> None:
    """Give the claim back without moving on (the step has to wait, e.g. for labels)."""
    Round.objects.filter(pk=round_id, claim_token=token).update(
        claim_token="", claimed_at=None, attempts=0
    )


def round_fail(*, round_id: int, reason: str, token: str | None = None) -> bool:
    """Record a failure with its reason; the failed state is kept in ``transitions``."""
    qs = Round.objects.filter(pk=round_id, state__in=WORK_STATES)
    if token is not None:
        qs = qs.filter(claim_token=token)
    rnd = qs.first()
    if rnd is None:
        return False
    changed = qs.update(
        state=RoundState.FAILED, failure_reason=f"{rnd.state}: {reason}"[:5000], claim_token=""
    )
    if changed:
        _append_transition(round_id, RoundState.FAILED)
    return bool(changed)


def failed_step(rnd: Round) -> str:
    """The state a failed round failed in (to retry from)."""
    state = rnd.failure_reason.split(":", 1)[0]
    return state if state in WORK_STATES else RoundState.GENERATING


def round_retry(*, round_id: int) -> Round:
    """Send a failed round back to the step it failed in."""
    rnd = Round.objects.filter(pk=round_id).first()
    if rnd is None:
        raise NotFound("No such round.")
    with transaction.atomic():
        changed = Round.objects.filter(pk=round_id, state=RoundState.FAILED).update(
            state=failed_step(rnd), failure_reason="", claim_token="", attempts=0
        )
        if not changed:
            raise Conflict(
                f"Round {rnd.index} is {rnd.state}, not failed.", code="invalid_transition"
            )
        dispatch.step(round_id)
    rnd.refresh_from_db()
    return rnd
