"""The two hot paths of labeling, next and submit, as hand-written PostgreSQL (issue 21).

Profiling ``bench/serving`` showed that most of the web process's CPU per label went to
Django's ORM *building* SQL (compiling the same querysets on every request), not to running
it. These functions do what the ORM version in :mod:`services` does, with the same locks in
the same order, in fewer statements (writes that go together are one statement with
data-modifying CTEs) whose text is built once, at import, and which PostgreSQL prepares once
per connection (:func:`cursor`). They are called only on PostgreSQL, inside the services'
transactions; SQLite (the embedded demo) runs the ORM version. Every labeling service test
runs both ways (``tests/rlhf_platform/labeling/conftest.py``); the statements are counted in
``tests/rlhf_platform/api/test_hot_paths.py``.

Invariants kept (the database enforces them either way): a comparison row is leased under
``FOR UPDATE SKIP LOCKED`` and never past ``labels_required``; a submit locks its lease and
comparison (``FOR UPDATE OF``) before anything else and the budget row last; the budget
debit is a conditional UPDATE whose cap test PostgreSQL re-checks on the latest row version
after waiting for its lock, so the caps hold exactly; the label, the ledger row and the
debit are one statement; the partial unique indexes refuse a second live lease or a second
label of one annotator.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Self

from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper

from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.campaigns.models import Campaign, Membership, Prompt
from rlhf_platform.labeling.models import (
    Comparison,
    Label,
    LabelSource,
    Lease,
    LeaseState,
)
from rlhf_platform.rounds.models import Response


def cursor() -> CursorWrapper:
    """A cursor on Django's connection whose statements PostgreSQL prepares once per
    connection (psycopg 3, server-side binding), wrapped like any Django cursor (errors,
    query logging, execute wrappers); a plain Django cursor when
    ``settings.DATABASE_PREPARED_STATEMENTS`` is off (e.g. behind a transaction pooler).

    Measured (bench/serving/inproc.py): planning was more than half of PostgreSQL's CPU per
    label; prepared, the backend's CPU per label fell about 3x. Only these fixed statements
    are prepared, not the ORM's, whose client-side binding the rest of the code relies on.
    """
    if not settings.DATABASE_PREPARED_STATEMENTS or _Prepared is None:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        # Django's private wrapping step of connection.cursor(), absent from django-stubs.
        wrapped: CursorWrapper = connection._prepare_cursor(  # type: ignore[attr-defined]
            _Prepared(connection.connection)
        )
        return wrapped


_Prepared: type[_PreparedCursor] | None
try:
    import psycopg
    from django.db.backends.postgresql.base import ServerBindingCursor
    from psycopg.abc import Params, QueryNoTemplate
except ImportError:  # psycopg 2: no server-side binding
    _Prepared = None
else:
    # psycopg.Cursor is already a base of ServerBindingCursor (the MRO is unchanged); named
    # here for mypy, since django-stubs leave it out (and with it __init__ and execute).
    class _PreparedCursor(ServerBindingCursor, psycopg.Cursor[tuple[Any, ...]]):
        # Only psycopg's first overload is kept: this module passes str queries, never
        # Template ones (t-strings, Python 3.14).
        def execute(  # type: ignore[override]
            self,
            query: QueryNoTemplate,
            params: Params | None = None,
            *,
            prepare: bool | None = None,
            binary: bool | None = None,
        ) -> Self:
            return super().execute(query, params, prepare=True, binary=binary)

    _Prepared = _PreparedCursor


_T = {
    "campaign": Campaign._meta.db_table,
    "membership": Membership._meta.db_table,
    "budget": Budget._meta.db_table,
    "ledger": LedgerEntry._meta.db_table,
    "comparison": Comparison._meta.db_table,
    "lease": Lease._meta.db_table,
    "label": Label._meta.db_table,
    "prompt": Prompt._meta.db_table,
    "response": Response._meta.db_table,
}
_BUDGET_FIELDS = [f.attname for f in Budget._meta.concrete_fields]
_MESSAGES = Prompt._meta.get_field("messages")

#: The member's campaign state and its budget row (no lock: submits re-check under lock).
CAMPAIGN_AND_BUDGET = f"""
SELECT c.state, {", ".join(f"b.{f}" for f in _BUDGET_FIELDS)}
FROM {_T["campaign"]} c
JOIN {_T["membership"]} m ON m.campaign_id = c.id AND m.user_id = %(user)s
JOIN {_T["budget"]} b ON b.campaign_id = c.id
WHERE c.id = %(campaign)s
"""

_PAIR_COLUMNS = "p.text, p.messages, ra.text, rb.text"
_PAIR_JOINS = f"""
JOIN {_T["prompt"]} p ON p.id = c.prompt_id
JOIN {_T["response"]} ra ON ra.id = c.response_a_id
JOIN {_T["response"]} rb ON rb.id = c.response_b_id
"""

#: The annotator's live lease in the campaign, locked, with its pair for display.
LIVE_LEASE = f"""
SELECT l.id, l.comparison_id, l.swapped, l.created_at, l.expires_at, {_PAIR_COLUMNS}
FROM {_T["lease"]} l
JOIN {_T["comparison"]} c ON c.id = l.comparison_id
{_PAIR_JOINS}
WHERE l.annotator_id = %(user)s AND l.campaign_id = %(campaign)s AND l.state = 'active'
LIMIT 1
FOR UPDATE OF l
"""

OUTSTANDING = f"""
SELECT count(*) FROM {_T["lease"]}
WHERE campaign_id = %(campaign)s AND state = 'active' AND expires_at > %(now)s
"""

#: Pick, lock and take one slot of the best comparison, and write the lease: one statement.
#: The pick is the ORM version's query: queued, a slot open, neither labeled nor skipped
#: nor submitted by this annotator, by priority then id, SKIP LOCKED. The two exclusions are
#: probes by comparison (indexes on lease.comparison_id and label (comparison_id,
#: annotator_id)), one per candidate row walked on the comparison_queue index: no term ties
#: them to the campaign, which would invite a plan that reads all of the campaign's leases
#: (measured: PostgreSQL's CPU per label went from 8 ms to 60-130 ms with such a plan).
LEASE_NEW = f"""
WITH pick AS (
    SELECT q.id FROM {_T["comparison"]} q
    WHERE q.campaign_id = %(campaign)s AND q.state = 'queued'
      AND q.labels_count < q.labels_required - q.leased_count
      AND NOT EXISTS (
          SELECT 1 FROM {_T["lease"]} s
          WHERE s.comparison_id = q.id AND s.annotator_id = %(user)s
            AND s.state IN ('submitted', 'skipped'))
      AND NOT EXISTS (
          SELECT 1 FROM {_T["label"]} x
          WHERE x.comparison_id = q.id AND x.annotator_id = %(user)s)
    ORDER BY q.priority DESC, q.id
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED
), taken AS (
    UPDATE {_T["comparison"]} c
    SET leased_count = c.leased_count + 1,
        state = CASE WHEN c.labels_count + c.leased_count + 1 >= c.labels_required
                     THEN 'leased' ELSE 'queued' END,
        updated_at = %(now)s
    FROM pick WHERE c.id = pick.id
    RETURNING c.id, c.prompt_id, c.response_a_id, c.response_b_id
), lease AS (
    INSERT INTO {_T["lease"]}
        (comparison_id, campaign_id, annotator_id, swapped, state, created_at, expires_at)
    SELECT taken.id, %(campaign)s, %(user)s, %(swapped)s, 'active', %(now)s, %(expires)s
    FROM taken
    RETURNING id, comparison_id
)
SELECT lease.id, lease.comparison_id, {_PAIR_COLUMNS}
FROM lease JOIN taken c ON c.id = lease.comparison_id
{_PAIR_JOINS}
"""

#: The caller's lease and its comparison, both locked (lease first), and the label already
#: stored under this idempotency key, if any (for replays).
SUBMIT_LOCK = f"""
SELECT l.id, l.state, l.swapped, l.expires_at, l.campaign_id, l.comparison_id, l.created_at,
       c.state, c.labels_count, c.leased_count, c.labels_required, c.round_id,
       k.id
FROM {_T["lease"]} l
JOIN {_T["comparison"]} c ON c.id = l.comparison_id
LEFT JOIN {_T["label"]} k ON k.annotator_id = %(user)s AND k.idempotency_key = %(key)s
WHERE l.id = %(lease)s AND l.annotator_id = %(user)s
FOR UPDATE OF l, c
"""

#: The lease and comparison rows already locked, written in one statement.
SUBMIT_CLOSE = f"""
WITH closed AS (
    UPDATE {_T["lease"]} SET state = 'submitted', closed_at = %(now)s WHERE id = %(lease)s
)
UPDATE {_T["comparison"]}
SET labels_count = %(labels_count)s, leased_count = %(leased_count)s, state = %(state)s,
    updated_at = %(now)s
WHERE id = %(comparison)s
"""

#: The debit, the label and its ledger row: one statement. The budget row is locked last by
#: the UPDATE; its caps are part of the UPDATE's condition, which PostgreSQL re-evaluates
#: on the newest version of the row once it holds the lock. A campaign with a per-annotator
#: daily cap takes the ORM path instead (its count must be read after the lock).
SUBMIT_DEBIT = f"""
WITH debit AS (
    UPDATE {_T["budget"]} b
    SET labels_spent = b.labels_spent + 1, cost_spent = b.cost_spent + b.human_label_cost
    WHERE b.campaign_id = %(campaign)s
      AND b.annotator_daily_cap IS NULL
      AND (b.label_cap IS NULL OR b.labels_spent < b.label_cap)
      AND (b.cost_cap IS NULL OR b.cost_spent + b.human_label_cost <= b.cost_cap)
    RETURNING b.id, b.human_label_cost
), label AS (
    INSERT INTO {_T["label"]}
        (comparison_id, campaign_id, lease_id, source, annotator_id, judge_name, choice,
         shown_swapped, rationale, time_taken_ms, idempotency_key, cost, created_at, flag_reason)
    SELECT %(comparison)s, %(campaign)s, %(lease)s, 'human', %(user)s, '', %(choice)s,
           %(swapped)s, %(rationale)s, %(time_taken_ms)s::integer, %(key)s, debit.human_label_cost,
           %(now)s, ''
    FROM debit
    RETURNING id, cost
), ledger AS (
    INSERT INTO {_T["ledger"]}
        (budget_id, label_id, source, annotator_id, labels, amount, tokens, note, created_at)
    SELECT debit.id, label.id, 'human', %(user)s, 1, debit.human_label_cost, 0, '', %(now)s
    FROM debit, label
)
SELECT label.id, label.cost FROM label
"""


def _pair(
    comparison_id: int, prompt_text: str, messages: str | None, a_text: str, b_text: str
) -> Comparison:
    """A comparison carrying just what ``lease_display`` reads."""
    comparison = Comparison(pk=comparison_id)
    comparison.prompt = Prompt(
        text=prompt_text,
        # No key transform here: Django's from_db_value takes None for the expression,
        # which django-stubs type as required.
        messages=_MESSAGES.from_db_value(messages, None, connection),  # type: ignore[arg-type]
    )
    comparison.response_a = Response(text=a_text)
    comparison.response_b = Response(text=b_text)
    return comparison


def _active_lease(
    user: User,
    campaign_id: int,
    lease_id: int,
    comparison_id: int,
    swapped: bool,
    created_at: dt.datetime,
    expires_at: dt.datetime,
    pair: list[Any],
) -> Lease:
    """The annotator's active lease as ``lease_display`` reads it, from a row's columns."""
    lease = Lease(
        pk=lease_id,
        campaign_id=campaign_id,
        annotator_id=user.pk,
        swapped=swapped,
        state=LeaseState.ACTIVE,
        created_at=created_at,
        expires_at=expires_at,
    )
    lease.comparison = _pair(comparison_id, *pair)
    return lease


def campaign_and_budget(user: User, campaign_id: int) -> tuple[str, Budget] | None:
    with cursor() as cur:
        cur.execute(CAMPAIGN_AND_BUDGET, {"user": user.pk, "campaign": campaign_id})
        row = cur.fetchone()
    if row is None:
        return None
    return row[0], Budget.from_db(connection.alias, _BUDGET_FIELDS, row[1:])


def live_lease(user: User, campaign_id: int) -> Lease | None:
    with cursor() as cur:
        cur.execute(LIVE_LEASE, {"user": user.pk, "campaign": campaign_id})
        row = cur.fetchone()
    if row is None:
        return None
    lease_id, comparison_id, swapped, created_at, expires_at, *pair = row
    return _active_lease(
        user, campaign_id, lease_id, comparison_id, swapped, created_at, expires_at, pair
    )


def outstanding_leases(campaign_id: int, now: dt.datetime) -> int:
    with cursor() as cur:
        cur.execute(OUTSTANDING, {"campaign": campaign_id, "now": now})
        count: int = cur.fetchone()[0]
        return count


def lease_new(
    user: User, campaign_id: int, *, swapped: bool, now: dt.datetime, expires_at: dt.datetime
) -> Lease | None:
    with cursor() as cur:
        cur.execute(
            LEASE_NEW,
            {
                "user": user.pk,
                "campaign": campaign_id,
                "swapped": swapped,
                "now": now,
                "expires": expires_at,
            },
        )
        row = cur.fetchone()
    if row is None:
        return None
    lease_id, comparison_id, *pair = row
    return _active_lease(user, campaign_id, lease_id, comparison_id, swapped, now, expires_at, pair)


class SubmitLock:
    """What :data:`SUBMIT_LOCK` read: the locked lease, its comparison, a replayed label."""

    __slots__ = ("lease", "comparison", "replay_label_id")

    def __init__(self, user: User, row: tuple[Any, ...]) -> None:
        (lease_id, state, swapped, expires_at, campaign_id, comparison_id, created_at,
         c_state, labels_count, leased_count, labels_required, round_id, replay) = row  # fmt: skip
        self.comparison = Comparison(
            pk=comparison_id,
            campaign_id=campaign_id,
            state=c_state,
            labels_count=labels_count,
            leased_count=leased_count,
            labels_required=labels_required,
            round_id=round_id,
        )
        self.lease = Lease(
            pk=lease_id,
            campaign_id=campaign_id,
            annotator_id=user.pk,
            swapped=swapped,
            state=state,
            created_at=created_at,
            expires_at=expires_at,
        )
        self.lease.comparison = self.comparison
        self.replay_label_id = replay


def submit_lock(user: User, lease_id: int, idempotency_key: str) -> SubmitLock | None:
    with cursor() as cur:
        cur.execute(SUBMIT_LOCK, {"user": user.pk, "lease": lease_id, "key": idempotency_key})
        row = cur.fetchone()
    return None if row is None else SubmitLock(user, row)


def submit_close(lease: Lease, comparison: Comparison, now: dt.datetime) -> None:
    """Write the counts and state already set on ``comparison``; close ``lease``."""
    with cursor() as cur:
        cur.execute(
            SUBMIT_CLOSE,
            {
                "now": now,
                "lease": lease.pk,
                "comparison": comparison.pk,
                "labels_count": comparison.labels_count,
                "leased_count": comparison.leased_count,
                "state": comparison.state,
            },
        )
    lease.state, lease.closed_at = LeaseState.SUBMITTED, now


def submit_debit(
    *,
    user: User,
    lease: Lease,
    choice: str,
    rationale: str,
    time_taken_ms: int | None,
    idempotency_key: str,
    now: dt.datetime,
) -> Label | None:
    """Debit the budget and store the label; None (nothing written) when the budget refuses
    or has a daily cap (the caller then takes the locking ORM path, which says why)."""
    with cursor() as cur:
        cur.execute(
            SUBMIT_DEBIT,
            {
                "campaign": lease.campaign_id,
                "comparison": lease.comparison_id,
                "lease": lease.pk,
                "user": user.pk,
                "choice": choice,
                "swapped": lease.swapped,
                "rationale": rationale,
                "time_taken_ms": time_taken_ms,
                "key": idempotency_key,
                "now": now,
            },
        )
        row = cur.fetchone()
    if row is None:
        return None
    label_id, cost = row
    return Label(
        pk=label_id,
        comparison_id=lease.comparison_id,
        campaign_id=lease.campaign_id,
        lease_id=lease.pk,
        source=LabelSource.HUMAN,
        annotator_id=user.pk,
        choice=choice,
        shown_swapped=lease.swapped,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        idempotency_key=idempotency_key,
        cost=cost,
        created_at=now,
    )
