"""The soak's checks read the database in one snapshot while the judge campaign keeps writing.

Regression for the "budgets whose labels_spent drifted: 1" the short soak reported on
2026-11-25: the check read the budgets, then counted the labels in a later statement, and a
judge label committed in between looked like a drift. `consistent_snapshot` makes every read
of the checks see one committed state.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.db.utils import InternalError

from bench.soak.harness import consistent_snapshot
from rlhf_platform.budgets.models import Budget
from tests.conftest import make_campaign, make_user


def _commit_elsewhere(fn) -> None:
    """Run `fn` on a second database connection (another thread) and commit it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with transaction.atomic():
                fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.mark.django_db(transaction=True)
def test_reads_inside_the_snapshot_do_not_see_later_commits():
    campaign = make_campaign(make_user("owner", role="researcher"))
    Budget.objects.filter(campaign=campaign).update(labels_spent=5)

    with consistent_snapshot():
        before = Budget.objects.get(campaign=campaign).labels_spent
        _commit_elsewhere(lambda: Budget.objects.filter(campaign=campaign).update(labels_spent=6))
        again = Budget.objects.get(campaign=campaign).labels_spent

    assert before == again == 5
    assert Budget.objects.get(campaign=campaign).labels_spent == 6  # committed, seen after


@pytest.mark.django_db(transaction=True)
def test_the_snapshot_is_read_only():
    campaign = make_campaign(make_user("owner", role="researcher"))
    with pytest.raises(InternalError, match="read-only transaction"):
        with consistent_snapshot():
            Budget.objects.filter(campaign=campaign).update(labels_spent=1)
    assert Budget.objects.get(campaign=campaign).labels_spent == 0
