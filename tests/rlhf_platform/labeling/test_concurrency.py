"""16 annotators hammer next/submit on one campaign (overlap 2, label cap) on real
PostgreSQL, each in its own thread and database connection. Double clicks are simulated by
submitting the same idempotency key from two threads at once, then once more later."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.errors import BudgetExhausted
from rlhf_platform.labeling.models import Comparison, Label, Lease, LeaseState
from rlhf_platform.labeling.services import NothingToLabel, comparison_next, label_submit
from tests.conftest import make_campaign, make_user

ANNOTATORS = 16
PAIRS = 40
OVERLAP = 2
LABEL_CAP = 57  # below PAIRS * OVERLAP, so the cap binds while work is left


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_break_the_invariants(researcher):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    users = [make_user(f"worker{i}") for i in range(ANNOTATORS)]
    campaign = make_campaign(
        researcher,
        name="stress",
        pairs=PAIRS,
        overlap=OVERLAP,
        label_cap=LABEL_CAP,
        members=tuple(users),
    )
    acknowledged: list[int] = []
    replays: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(ANNOTATORS)

    def submit(user, lease, choice, key):
        try:
            return label_submit(
                annotator=user, lease_id=lease.pk, choice=choice, idempotency_key=key
            )
        finally:
            connections.close_all()

    def work(user, seed):
        rng = random.Random(seed)
        idle = 0
        start.wait()
        try:
            with ThreadPoolExecutor(max_workers=2) as double_click:
                while idle < 40:
                    try:
                        lease = comparison_next(
                            annotator=user, campaign_id=campaign.pk, rng=rng
                        ).lease
                    except NothingToLabel:
                        idle += 1
                        time.sleep(0.02)
                        continue
                    except BudgetExhausted:
                        return
                    choice = rng.choice(["A", "B", "tie", "both_bad"])
                    key = f"{user.username}-{lease.pk}"
                    futures = [
                        double_click.submit(submit, user, lease, choice, key) for _ in range(2)
                    ]
                    try:
                        results = [f.result() for f in futures]
                    except BudgetExhausted:
                        return
                    ids = {label.pk for label, _ in results}
                    assert len(ids) == 1, "a double click stored two labels"
                    assert sum(created for _, created in results) == 1
                    label_id = ids.pop()
                    retry, created = label_submit(
                        annotator=user, lease_id=lease.pk, choice=choice, idempotency_key=key
                    )
                    with lock:
                        acknowledged.append(label_id)
                        replays.append((label_id, retry.pk))
                    assert not created
        except BaseException as exc:  # reported below, with the thread's traceback
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(u, i)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors

    labels = list(
        Label.objects.filter(campaign=campaign).values("id", "comparison_id", "annotator_id")
    )
    # The cap holds exactly: not one label over, and it was reached.
    assert len(labels) == LABEL_CAP
    # Every acknowledged label is in the database exactly once, and nothing else is.
    assert sorted(acknowledged) == sorted(row["id"] for row in labels)
    assert all(first == again for first, again in replays)
    # No comparison over its overlap; counters agree with the rows.
    per_comparison = Counter(row["comparison_id"] for row in labels)
    assert max(per_comparison.values()) <= OVERLAP
    for comp in Comparison.objects.filter(campaign=campaign):
        assert comp.labels_count == per_comparison.get(comp.pk, 0)
    # One annotator never labels the same comparison twice.
    pairs = Counter((row["comparison_id"], row["annotator_id"]) for row in labels)
    assert max(pairs.values()) == 1
    # Budget and ledger are exact.
    budget = Budget.objects.get(campaign=campaign)
    assert budget.labels_spent == LABEL_CAP
    assert LedgerEntry.objects.filter(budget=budget).count() == LABEL_CAP
    assert budget.cost_spent == sum(
        LedgerEntry.objects.filter(budget=budget).values_list("amount", flat=True)
    )
    # Leases still active hold exactly the slots counted on their comparisons.
    active = Counter(
        Lease.objects.filter(campaign=campaign, state=LeaseState.ACTIVE).values_list(
            "comparison_id", flat=True
        )
    )
    for comp in Comparison.objects.filter(campaign=campaign):
        assert comp.leased_count == active.get(comp.pk, 0)
