"""Serving comparisons to annotators and storing their labels.

Concurrency model (PostgreSQL): a lease is taken on a comparison row locked with
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent annotators never wait on each other and
never take the same slot; a submit locks the caller's lease, the comparison and the
campaign's budget row, in that order everywhere, so there is no deadlock. SQLite (the
embedded quickstart) serializes transactions instead.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from rlhf_platform import limits
from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.budgets.services import (
    budget_debit,
    budget_lock,
    budget_refusal,
    unit_cost,
)
from rlhf_platform.campaigns.models import Campaign, CampaignState, Round, RoundState
from rlhf_platform.errors import Conflict, InvalidInput, NotFound
from rlhf_platform.labeling import pg
from rlhf_platform.labeling.models import (
    Choice,
    Comparison,
    ComparisonState,
    Label,
    LabelSource,
    Lease,
    LeaseState,
)
from rlhf_platform.labeling.selectors import get_lease_for_annotator
from rlhf_platform.raters.gold import gold_label_store, gold_lease, is_gold
from rlhf_platform.raters.services import refit_soon
from rlhf_platform.rounds import dispatch

IDEMPOTENCY_KEY_MAX = 100
# Shown-side answer -> stored answer when B was shown first.
_UNSWAP = {
    Choice.A: Choice.B,
    Choice.B: Choice.A,
    Choice.TIE: Choice.TIE,
    Choice.BOTH_BAD: Choice.BOTH_BAD,
}


class NothingToLabel(NotFound):
    """No comparison is waiting for this annotator now (the next round may bring some)."""

    code = "nothing_queued"


# What lease_display reads: fetched with the lease, so serving a pair costs no extra queries.
_DISPLAY = ("comparison__prompt", "comparison__response_a", "comparison__response_b")


def hand_written_sql() -> bool:
    """Whether next and submit run as the hand-written SQL of :mod:`.pg` (PostgreSQL) rather
    than through the ORM (SQLite; the tests run both on PostgreSQL)."""
    return connection.vendor == "postgresql"


@dataclass(frozen=True)
class Served:
    lease: Lease
    created: bool  # False when the annotator's live lease was returned again


def _comparison_state(c: Comparison) -> str:
    if c.labels_count >= c.labels_required:
        return ComparisonState.LABELED
    if c.labels_count + c.leased_count >= c.labels_required:
        return ComparisonState.LEASED
    return ComparisonState.QUEUED


def _release_slot(comparison_id: int) -> None:
    """Give back one leased slot of a comparison (lease expired or skipped)."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison_id)
    comparison.leased_count = max(0, comparison.leased_count - 1)
    if comparison.state != ComparisonState.EXPIRED:
        comparison.state = _comparison_state(comparison)
    comparison.save(update_fields=["leased_count", "state", "updated_at"])


def _close_lease(lease: Lease, state: str, now: dt.datetime) -> None:
    """Close an ACTIVE lease (held under lock) and free its slot."""
    Lease.objects.filter(pk=lease.pk).update(state=state, closed_at=now)
    lease.state, lease.closed_at = state, now
    _release_slot(lease.comparison_id)


def _member_campaign(user: User, campaign_id: int) -> Campaign:
    campaign = (
        Campaign.objects.filter(pk=campaign_id, memberships__user=user)
        .select_related("budget")
        .first()
    )
    if campaign is None:
        raise NotFound("No such campaign.")
    return campaign


@transaction.atomic
def comparison_next(
    *,
    annotator: User,
    campaign_id: int,
    lease_seconds: int | None = None,
    rng: random.Random | None = None,
) -> Served:
    """Serve the annotator's live lease in the campaign, or lease a new comparison.

    The new one is the highest-priority comparison of the campaign that still has an open
    slot, that this annotator has neither labeled nor skipped. Raises
    :class:`NothingToLabel` when none is waiting and :class:`BudgetExhausted` when the
    campaign may not spend more labels (the annotator is told why).
    """
    if hand_written_sql():
        return _comparison_next_pg(annotator, campaign_id, lease_seconds, rng)
    campaign = _member_campaign(annotator, campaign_id)
    now = timezone.now()
    live = (
        Lease.objects.select_for_update(of=("self",))
        .filter(annotator=annotator, campaign=campaign, state=LeaseState.ACTIVE)
        .select_related(*_DISPLAY)
        .first()
    )
    if live is not None:
        if live.expires_at > now:
            return Served(lease=live, created=False)
        _close_lease(live, LeaseState.EXPIRED, now)

    _check_may_lease(campaign.state, campaign.budget, annotator)
    if campaign.budget.label_cap is not None:
        # Hand out no more leases than labels left; submits still check the cap exactly.
        outstanding = Lease.objects.filter(
            campaign=campaign, state=LeaseState.ACTIVE, expires_at__gt=now
        ).count()
        _check_outstanding(campaign.budget, outstanding)
    rng = rng or random.SystemRandom()
    seconds = lease_seconds or settings.LEASE_SECONDS
    gold = gold_lease(  # issue 20: gold pairs mixed in at the campaign's rate
        annotator=annotator,
        campaign_id=campaign.pk,
        now=now,
        expires_at=now + dt.timedelta(seconds=seconds),
        rng=rng,
    )
    if gold is not None:
        return Served(lease=gold, created=True)

    # Both exclusions are bounded to this campaign (its comparisons are all there is to
    # exclude), not to the annotator's whole history across campaigns.
    seen = Lease.objects.filter(
        annotator=annotator, campaign=campaign, state__in=[LeaseState.SUBMITTED, LeaseState.SKIPPED]
    ).values("comparison_id")
    comparison = (
        # Only the comparison row is locked; its prompt and responses come in the same query
        # for the annotator's page (lease_display), read-only.
        Comparison.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("prompt", "response_a", "response_b")
        .filter(campaign=campaign, state=ComparisonState.QUEUED)
        .filter(labels_count__lt=F("labels_required") - F("leased_count"))
        .exclude(pk__in=seen)
        .exclude(
            pk__in=Label.objects.filter(annotator=annotator, campaign=campaign).values(
                "comparison_id"
            )
        )
        .order_by("-priority", "id")
        .first()
    )
    if comparison is None:
        raise NothingToLabel(_NOTHING_WAITING)
    comparison.leased_count += 1
    comparison.state = _comparison_state(comparison)
    comparison.save(update_fields=["leased_count", "state", "updated_at"])
    lease = Lease.objects.create(
        comparison=comparison,
        campaign=campaign,
        annotator=annotator,
        swapped=rng.random() < 0.5,
        expires_at=now + dt.timedelta(seconds=seconds),
    )
    return Served(lease=lease, created=True)


_NOTHING_WAITING = "Nothing is waiting for you now; the next round is being prepared."


def _check_may_lease(campaign_state: str, budget, annotator: User) -> None:
    if campaign_state != CampaignState.RUNNING:
        raise Conflict(
            f"The campaign is {campaign_state}, not running.", code="campaign_not_running"
        )
    refusal = budget_refusal(budget=budget, source=LabelSource.HUMAN, annotator_id=annotator.pk)
    if refusal:
        raise refusal


def _check_outstanding(budget, outstanding: int) -> None:
    if budget.labels_spent + outstanding >= budget.label_cap:
        raise NothingToLabel(
            "Every remaining label of the budget is being worked on; try again shortly."
        )


def _comparison_next_pg(
    annotator: User, campaign_id: int, lease_seconds: int | None, rng: random.Random | None
) -> Served:
    """:func:`comparison_next` on PostgreSQL: the same reads, locks and writes in 3 or 4
    statements built once (:mod:`rlhf_platform.labeling.pg`)."""
    found = pg.campaign_and_budget(annotator, campaign_id)
    if found is None:
        raise NotFound("No such campaign.")
    campaign_state, budget = found
    now = timezone.now()
    live = pg.live_lease(annotator, campaign_id)
    if live is not None:
        if live.expires_at > now:
            return Served(lease=live, created=False)
        _close_lease(live, LeaseState.EXPIRED, now)
    _check_may_lease(campaign_state, budget, annotator)
    if budget.label_cap is not None:
        _check_outstanding(budget, pg.outstanding_leases(campaign_id, now))
    seconds = lease_seconds or settings.LEASE_SECONDS
    rng = rng or random.SystemRandom()
    expires_at = now + dt.timedelta(seconds=seconds)
    gold = gold_lease(
        annotator=annotator, campaign_id=campaign_id, now=now, expires_at=expires_at, rng=rng
    )
    if gold is not None:
        return Served(lease=gold, created=True)
    lease = pg.lease_new(
        annotator,
        campaign_id,
        swapped=rng.random() < 0.5,
        now=now,
        expires_at=expires_at,
    )
    if lease is None:
        raise NothingToLabel(_NOTHING_WAITING)
    return Served(lease=lease, created=True)


def _validate_submission(choice: str, rationale: str, idempotency_key: str) -> None:
    if choice not in Choice.values:
        raise InvalidInput(
            f"choice must be one of {', '.join(Choice.values)}, not {choice!r}.",
            code="invalid_choice",
        )
    if len(rationale) > settings.RATIONALE_MAX_LENGTH:
        raise InvalidInput(
            f"The rationale is {len(rationale)} characters; at most "
            f"{settings.RATIONALE_MAX_LENGTH} (RATIONALE_MAX_LENGTH) are accepted.",
            code="rationale_too_long",
        )
    for name, text in (("rationale", rationale), ("idempotency_key", idempotency_key)):
        problem = limits.bad_char(text)
        if problem:
            raise InvalidInput(f"The {name} {problem}.", code="invalid_text")
    if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise InvalidInput(
            f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.",
            code="invalid_idempotency_key",
        )


def _replay(annotator: User, idempotency_key: str, lease_id: int) -> Label | None:
    label = Label.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if label is not None and label.lease_id != lease_id:
        raise Conflict(
            "This idempotency key was used for another label.", code="idempotency_key_reused"
        )
    return label


def label_submit(
    *,
    annotator: User,
    lease_id: int,
    choice: str,
    idempotency_key: str,
    rationale: str = "",
    time_taken_ms: int | None = None,
) -> tuple[Label, bool]:
    """Store the annotator's answer for their lease and debit the budget, atomically.

    ``choice`` is given in the order the annotator saw ("A" is the response shown first).
    Returns ``(label, created)``; a retry with the same ``idempotency_key`` returns the
    same label with ``created=False`` and writes nothing.
    """
    _validate_submission(choice, rationale, idempotency_key)
    try:
        with transaction.atomic():
            return _label_submit_locked(
                annotator, lease_id, choice, idempotency_key, rationale, time_taken_ms
            )
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its label.
        label = _replay(annotator, idempotency_key, lease_id)
        if label is None:
            raise
        return label, False


def _label_submit_locked(
    annotator: User,
    lease_id: int,
    choice: str,
    idempotency_key: str,
    rationale: str,
    time_taken_ms: int | None,
) -> tuple[Label, bool]:
    fast = hand_written_sql()
    if fast:
        locked = pg.submit_lock(annotator, lease_id, idempotency_key)
        if locked is None:
            raise NotFound("No such lease.", code="lease_not_found")
        lease = locked.lease
        # The key's label as the statement saw it before waiting for the lock; a concurrent
        # retry that committed meanwhile left the lease closed: look again, now.
        if locked.replay_label_id is not None or lease.state != LeaseState.ACTIVE:
            existing = _replay(annotator, idempotency_key, lease.pk)
            if existing is not None:
                return existing, False
    else:
        lease = get_lease_for_annotator(annotator, lease_id, for_update=True)
        existing = _replay(annotator, idempotency_key, lease.pk)
        if existing is not None:
            return existing, False
    now = timezone.now()
    # An overdue lease still ACTIVE is left for the sweeper: this transaction rolls back.
    if lease.state == LeaseState.EXPIRED or (
        lease.state == LeaseState.ACTIVE and lease.expires_at <= now
    ):
        raise _LeaseExpired()
    if lease.state != LeaseState.ACTIVE:
        raise Conflict(f"This lease is already {lease.state}.", code="lease_closed")

    # Locked with the lease by the same SELECT ... FOR UPDATE (lease, then comparison).
    comparison = lease.comparison
    if comparison.state == ComparisonState.EXPIRED:
        raise Conflict("This comparison's round has closed.", code="comparison_expired")
    stored_choice = _UNSWAP[Choice(choice)] if lease.swapped else Choice(choice)
    refit_soon(lease.campaign_id)  # issue 20: the rater model, after commit, debounced
    if is_gold(comparison):  # no budget debit: gold is not a training label
        label = gold_label_store(
            annotator=annotator,
            lease=lease,
            stored_choice=stored_choice,
            rationale=rationale,
            time_taken_ms=time_taken_ms,
            idempotency_key=idempotency_key,
            now=now,
        )
        return label, True
    # The rows already locked are written first; the campaign's budget row, the one lock
    # every submit of the campaign queues on, is taken last and held for the fewest statements.
    comparison.labels_count += 1
    comparison.leased_count = max(0, comparison.leased_count - 1)
    comparison.state = _comparison_state(comparison)
    label = None
    if fast:
        pg.submit_close(lease, comparison, now)
        label = pg.submit_debit(
            user=annotator,
            lease=lease,
            choice=stored_choice,
            rationale=rationale,
            time_taken_ms=time_taken_ms,
            idempotency_key=idempotency_key,
            now=now,
        )
    else:
        comparison.save(update_fields=["labels_count", "leased_count", "state", "updated_at"])
        Lease.objects.filter(pk=lease.pk).update(state=LeaseState.SUBMITTED, closed_at=now)
    if label is None:  # not PostgreSQL, or the budget refused or has a daily cap
        label = _debit_and_store(
            annotator, lease, comparison, stored_choice, rationale, time_taken_ms, idempotency_key
        )
    if comparison.round_id is not None and comparison.state == ComparisonState.LABELED:
        dispatch.step(comparison.round_id)  # the round may be complete: let a worker check
    return label, True


def _debit_and_store(
    annotator: User,
    lease: Lease,
    comparison: Comparison,
    stored_choice: str,
    rationale: str,
    time_taken_ms: int | None,
    idempotency_key: str,
) -> Label:
    budget = budget_lock(campaign_id=lease.campaign_id)
    label = Label.objects.create(
        comparison=comparison,
        campaign_id=lease.campaign_id,
        lease=lease,
        source=LabelSource.HUMAN,
        annotator=annotator,
        choice=stored_choice,
        shown_swapped=lease.swapped,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        idempotency_key=idempotency_key,
        # The debit below charges this same unit cost, or refuses and rolls all of it back.
        cost=unit_cost(budget=budget, source=LabelSource.HUMAN),
    )
    budget_debit(
        budget=budget, source=LabelSource.HUMAN, annotator_id=annotator.pk, label_id=label.pk
    )
    return label


class _LeaseExpired(Conflict):
    code = "lease_expired"

    def __init__(self) -> None:
        super().__init__("Your lease on this comparison expired; ask for the next comparison.")


def last_undoable_label(*, annotator: User, campaign_id: int) -> Label | None:
    """The annotator's most recent label in the campaign if it may still be undone (within
    ``LABEL_UNDO_SECONDS``, its round still labeling); the page offers "undo" for it."""
    window = settings.LABEL_UNDO_SECONDS
    if not window:
        return None
    label = (
        Label.objects.filter(
            annotator=annotator,
            campaign_id=campaign_id,
            source=LabelSource.HUMAN,
            created_at__gt=timezone.now() - dt.timedelta(seconds=window),
        )
        .select_related("comparison__round")
        .order_by("-created_at", "-id")
        .first()
    )
    if label is None:
        return None
    rnd = label.comparison.round
    if rnd is not None and rnd.state != RoundState.LABELING:
        return None
    return label


@transaction.atomic
def label_undo(*, annotator: User, label_id: int) -> Lease:
    """Take back the annotator's own last label and hand its comparison back to them.

    Allowed within ``LABEL_UNDO_SECONDS`` of the label, for the annotator's most recent
    label in that campaign, while no round has consumed it (its round, if any, is still
    labeling: the round row is locked, so the worker's claim of the round waits for this
    transaction). The label is deleted; the budget is credited back with a correction entry
    in the ledger (the original debit stays, detached from the deleted label); the label's
    lease becomes live again (a fresh expiry), and any other live lease of the annotator in
    the campaign goes back to the queue. Returns the reopened lease.
    """
    label = (
        Label.objects.select_for_update()
        .filter(pk=label_id, annotator=annotator, source=LabelSource.HUMAN)
        .first()
    )
    if label is None:
        raise NotFound("No such label.", code="label_not_found")
    now = timezone.now()
    window = settings.LABEL_UNDO_SECONDS
    if not window or label.created_at <= now - dt.timedelta(seconds=window):
        raise Conflict(
            f"A label can be undone within {window} seconds only.", code="undo_window_passed"
        )
    newer = Label.objects.filter(
        annotator=annotator, campaign_id=label.campaign_id, created_at__gt=label.created_at
    ).exists()
    if newer:
        raise Conflict("Only your last label can be undone.", code="undo_not_last")
    if label.lease_id is None:
        raise Conflict("This label has no lease to reopen.", code="undo_not_possible")
    comparison = Comparison.objects.select_for_update().get(pk=label.comparison_id)
    if comparison.round_id is not None:
        rnd = Round.objects.select_for_update().get(pk=comparison.round_id)
        if rnd.state != RoundState.LABELING:
            raise Conflict("The round has already used this label.", code="undo_label_consumed")
    if comparison.state == ComparisonState.EXPIRED:
        raise Conflict("This comparison's round has closed.", code="comparison_expired")
    # The annotator's live lease (the next pair shown after the label) goes back to the
    # queue, unlabeled and not skipped: they will be served it again later.
    for live in Lease.objects.select_for_update().filter(
        annotator=annotator, campaign_id=label.campaign_id, state=LeaseState.ACTIVE
    ):
        _close_lease(live, LeaseState.EXPIRED, now)
    comparison.refresh_from_db()
    comparison.labels_count = max(0, comparison.labels_count - 1)
    comparison.leased_count += 1
    comparison.state = _comparison_state(comparison)
    comparison.save(update_fields=["labels_count", "leased_count", "state", "updated_at"])
    Lease.objects.filter(pk=label.lease_id).update(
        state=LeaseState.ACTIVE,
        closed_at=None,
        expires_at=now + dt.timedelta(seconds=settings.LEASE_SECONDS),
    )
    budget = budget_lock(campaign_id=label.campaign_id)
    entry = LedgerEntry.objects.filter(label=label).first()
    if entry is not None:
        amount = entry.amount
        LedgerEntry.objects.filter(pk=entry.pk).update(label=None)
        LedgerEntry.objects.create(
            budget=budget,
            source=entry.source,
            annotator=annotator,
            labels=-1,
            amount=-amount,
            note=f"undo of label {label.pk} (debit {entry.pk})",
        )
        Budget.objects.filter(pk=budget.pk).update(
            labels_spent=F("labels_spent") - 1, cost_spent=F("cost_spent") - amount
        )
    lease_id = label.lease_id
    label.delete()
    return Lease.objects.select_related(*_DISPLAY).get(pk=lease_id)


@transaction.atomic
def lease_skip(*, annotator: User, lease_id: int) -> Lease:
    """Give the comparison back; this annotator is not shown it again."""
    lease = get_lease_for_annotator(annotator, lease_id, for_update=True)
    if lease.state != LeaseState.ACTIVE:
        raise Conflict(f"This lease is already {lease.state}.", code="lease_closed")
    _close_lease(lease, LeaseState.SKIPPED, timezone.now())
    return lease


def leases_release_for(*, annotator: User, campaign_id: int) -> int:
    """Put the annotator's live leases in the campaign back in the queue (they left it)."""
    released = 0
    for lease in Lease.objects.select_for_update().filter(
        annotator=annotator, campaign_id=campaign_id, state=LeaseState.ACTIVE
    ):
        _close_lease(lease, LeaseState.EXPIRED, timezone.now())
        released += 1
    return released


@transaction.atomic
def lease_renew(*, annotator: User, lease_id: int, lease_seconds: int | None = None) -> Lease:
    """Extend a live lease while the annotator still has the page open."""
    lease = get_lease_for_annotator(annotator, lease_id, for_update=True)
    now = timezone.now()
    if lease.state != LeaseState.ACTIVE or lease.expires_at <= now:
        raise _LeaseExpired()
    lease.expires_at = now + dt.timedelta(seconds=lease_seconds or settings.LEASE_SECONDS)
    lease.save(update_fields=["expires_at"])
    return lease


def leases_release_expired(*, now: dt.datetime | None = None, batch_size: int = 500) -> int:
    """Expire overdue active leases and free their slots; returns how many.

    Works in batches of ``batch_size`` (each its own short transaction, rows locked with
    SKIP LOCKED so a concurrent submit or a second sweeper is never blocked).
    """
    now = now or timezone.now()
    released = 0
    while True:
        with transaction.atomic():
            batch = list(
                Lease.objects.select_for_update(skip_locked=True)
                .filter(state=LeaseState.ACTIVE, expires_at__lte=now)
                .order_by("expires_at")[:batch_size]
            )
            for lease in batch:
                _close_lease(lease, LeaseState.EXPIRED, now)
        released += len(batch)
        if len(batch) < batch_size:
            return released
