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

from ml_worker.core.choice import Choice as AnswerChoice
from rlhf_platform import limits
from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.budgets.services import (
    budget_debit,
    budget_lock,
    budget_refusal,
    unit_cost,
)
from rlhf_platform.campaigns.models import Campaign, CampaignState
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
from rlhf_platform.labeling.selectors import (
    ALL_BEING_WORKED_ON,
    NOTHING_WAITING,
    NothingToLabel,
    comparisons_waiting_for,
    get_lease_for_annotator,
)
from rlhf_platform.raters.gold import gold_label_store, gold_lease, is_gold
from rlhf_platform.raters.services import refit_soon
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState

IDEMPOTENCY_KEY_MAX = 100


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
    """The state a comparison's counts give: labeled once it has its labels, leased while
    every open slot is leased, queued otherwise (an expired one stays expired)."""
    if c.state == ComparisonState.EXPIRED:
        return ComparisonState.EXPIRED
    if c.labels_count >= c.labels_required:
        return ComparisonState.LABELED
    if c.labels_count + c.leased_count >= c.labels_required:
        return ComparisonState.LEASED
    return ComparisonState.QUEUED


def _release_slot(comparison_id: int) -> None:
    """Give back one leased slot of a comparison (lease expired or skipped)."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison_id)
    comparison.leased_count = max(0, comparison.leased_count - 1)
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

    comparison = (
        # Only the comparison row is locked; its prompt and responses come in the same query
        # for the annotator's page (lease_display), read-only.
        comparisons_waiting_for(annotator, campaign)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("prompt", "response_a", "response_b")
        .first()
    )
    if comparison is None:
        raise NothingToLabel(NOTHING_WAITING)
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


def _check_may_lease(campaign_state: str, budget: Budget, annotator: User) -> None:
    if campaign_state != CampaignState.RUNNING:
        raise Conflict(
            f"The campaign is {campaign_state}, not running.", code="campaign_not_running"
        )
    refusal = budget_refusal(budget=budget, source=LabelSource.HUMAN, annotator_id=annotator.pk)
    if refusal:
        raise refusal


def _check_outstanding(budget: Budget, outstanding: int) -> None:
    """Call only for a budget with a label cap (the callers check)."""
    if budget.label_cap is not None and budget.labels_spent + outstanding >= budget.label_cap:
        raise NothingToLabel(ALL_BEING_WORKED_ON)


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
        raise NothingToLabel(NOTHING_WAITING)
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
    if hand_written_sql():
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
    stored_choice = Choice(AnswerChoice.from_shown(choice, swapped=lease.swapped).value)
    refit_soon(lease.campaign_id)  # issue 20: the rater model, after commit, debounced
    if is_gold(comparison):  # no budget debit: gold is not a training label
        gold_label = gold_label_store(
            annotator=annotator,
            lease=lease,
            stored_choice=stored_choice,
            rationale=rationale,
            time_taken_ms=time_taken_ms,
            idempotency_key=idempotency_key,
            now=now,
        )
        return gold_label, True
    label = label_record(
        comparison=comparison,
        source=LabelSource.HUMAN,
        choice=stored_choice,
        shown_swapped=lease.swapped,
        idempotency_key=idempotency_key,
        annotator=annotator,
        lease=lease,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        now=now,
    )
    if comparison.round_id is not None and comparison.state == ComparisonState.LABELED:
        dispatch.step(comparison.round_id)  # the round may be complete: let a worker check
    return label, True


def label_record(
    *,
    comparison: Comparison,
    source: str,
    choice: str,
    shown_swapped: bool,
    idempotency_key: str,
    annotator: User | None = None,
    lease: Lease | None = None,
    rationale: str = "",
    time_taken_ms: int | None = None,
    judge_name: str = "",
    judge_prob_a: float | None = None,
    tokens: int = 0,
    now: dt.datetime | None = None,
) -> Label:
    """Record one label and debit its cost: the one place both happen (human labels from
    :func:`label_submit`, the judge's from the round engine).

    Call inside a transaction, holding the comparison's row lock (and the lease's, for a
    human label). A human label fills the slot its lease held (``labels_count`` + 1,
    ``leased_count`` - 1) and closes the lease as submitted; a judge label fills no human
    slot. Either way the comparison's state is recomputed from its counts, leased slots
    included. The campaign's budget row is locked last, held for the fewest statements;
    when a cap refuses, :class:`BudgetExhausted` is raised and the caller's transaction
    rolls everything back. ``tokens``: what a judge call cost in tokens (priced per token).

    On PostgreSQL a human label with its lease is written by the hand-written statements of
    :mod:`.pg` (:func:`_label_record_pg`: the same writes in the same order, two statements
    instead of six); when the budget refuses there, or has a daily cap, this ORM path runs.
    """
    now = now or timezone.now()
    if (
        source == LabelSource.HUMAN
        and lease is not None
        and annotator is not None
        and hand_written_sql()
    ):
        fast = _label_record_pg(
            comparison, annotator, lease, choice, rationale, time_taken_ms, idempotency_key, now
        )
        if fast is not None:
            return fast
    # The rows already locked are written first; the campaign's budget row, the one lock
    # every submit of the campaign queues on, is taken last and held for the fewest statements.
    fields = ["state", "updated_at"]
    if source == LabelSource.HUMAN:
        comparison.labels_count += 1
        fields.append("labels_count")
        if lease is not None:
            comparison.leased_count = max(0, comparison.leased_count - 1)
            fields.append("leased_count")
            Lease.objects.filter(pk=lease.pk).update(state=LeaseState.SUBMITTED, closed_at=now)
    comparison.state = _comparison_state(comparison)
    comparison.save(update_fields=fields)
    budget = budget_lock(campaign_id=comparison.campaign_id)
    label = Label.objects.create(
        comparison=comparison,
        campaign_id=comparison.campaign_id,
        lease=lease,
        source=source,
        annotator=annotator,
        judge_name=judge_name,
        judge_prob_a=judge_prob_a,
        choice=choice,
        shown_swapped=shown_swapped,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        idempotency_key=idempotency_key,
        # The debit below charges this same unit cost, or refuses and rolls all of it back.
        cost=unit_cost(budget=budget, source=source, tokens=tokens),
    )
    budget_debit(
        budget=budget,
        source=source,
        annotator_id=annotator.pk if annotator is not None else None,
        label_id=label.pk,
        tokens=tokens,
    )
    return label


def _label_record_pg(
    comparison: Comparison,
    annotator: User,
    lease: Lease,
    choice: str,
    rationale: str,
    time_taken_ms: int | None,
    idempotency_key: str,
    now: dt.datetime,
) -> Label | None:
    """:func:`label_record` of a human label as two hand-written statements (:mod:`.pg`)
    instead of six, with the same writes in the same lock order: the locked lease and
    comparison first, the budget row last. None when the debit refuses or a daily cap needs
    counting: the comparison's counts are put back and the ORM path does it all again from
    them, and says why."""
    counts = (comparison.labels_count, comparison.leased_count, comparison.state)
    comparison.labels_count += 1
    comparison.leased_count = max(0, comparison.leased_count - 1)
    comparison.state = _comparison_state(comparison)
    pg.submit_close(lease, comparison, now)
    label = pg.submit_debit(
        user=annotator,
        lease=lease,
        choice=choice,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        idempotency_key=idempotency_key,
        now=now,
    )
    if label is None:
        comparison.labels_count, comparison.leased_count, comparison.state = counts
    return label


@transaction.atomic
def comparison_hand_to_humans(*, comparison_id: int) -> None:
    """The judge gave up on a comparison (no valid answer after its attempts): humans label
    it instead, at least one of them. Its state follows from its counts, leased slots
    included (a mixed comparison whose human slots are leased or labeled stays so)."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison_id)
    comparison.judge_requested = False
    comparison.labels_required = max(comparison.labels_required, 1)
    comparison.state = _comparison_state(comparison)
    comparison.save(update_fields=["judge_requested", "labels_required", "state", "updated_at"])


def leases_expire_with_comparisons(*, comparison_ids: list[int], now: dt.datetime) -> int:
    """Close the live leases of comparisons that are being expired (their round closed) and
    give their slots back, so the counts stay true (``leased_count`` 0); returns how many
    leases were closed. Call inside the transaction that expires the comparisons."""
    closed = Lease.objects.filter(comparison_id__in=comparison_ids, state=LeaseState.ACTIVE).update(
        state=LeaseState.EXPIRED, closed_at=now
    )
    Comparison.objects.filter(pk__in=comparison_ids).update(
        state=ComparisonState.EXPIRED, leased_count=0
    )
    return closed


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
