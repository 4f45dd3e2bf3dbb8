"""Gold pairs in the annotator's queue: leasing one at the campaign's rate, storing its
answer without a budget debit. Called by ``rlhf_platform.labeling.services`` inside its
transactions, after the same checks as any lease (campaign running, budget, live lease).

A gold pair looks like any other pair to the annotator: the same lease, page and API
fields (a random left/right order, no sign of the answer or of being gold).
"""

from __future__ import annotations

import datetime as dt
import random

from django.db.models import F
from django.db.models.functions import Greatest

from rlhf_platform.accounts.models import User
from rlhf_platform.labeling.models import Comparison, Label, LabelSource, Lease, LeaseState
from rlhf_platform.raters.selectors import gold_rate

_DISPLAY = ("comparison__prompt", "comparison__response_a", "comparison__response_b")


def gold_lease(
    *,
    annotator: User,
    campaign_id: int,
    now: dt.datetime,
    expires_at: dt.datetime,
    rng: random.Random,
) -> Lease | None:
    """With probability the campaign's gold rate, lease a gold pair this annotator has not
    been served (nor labeled the comparison it was marked from); else None."""
    rate = gold_rate(campaign_id)
    if rate <= 0 or rng.random() >= rate:
        return None
    served = Lease.objects.filter(annotator=annotator, campaign_id=campaign_id).values(
        "comparison_id"
    )
    labeled = Label.objects.filter(annotator=annotator, campaign_id=campaign_id).values(
        "comparison_id"
    )
    comparison = (
        Comparison.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(campaign_id=campaign_id, gold__isnull=False)
        .exclude(pk__in=served)
        .exclude(gold__source_id__in=labeled)
        .order_by("id")
        .first()
    )
    if comparison is None:
        return None
    Comparison.objects.filter(pk=comparison.pk).update(leased_count=F("leased_count") + 1)
    lease = Lease.objects.create(
        comparison=comparison,
        campaign_id=campaign_id,
        annotator=annotator,
        swapped=rng.random() < 0.5,
        expires_at=expires_at,
    )
    return Lease.objects.select_related(*_DISPLAY).get(pk=lease.pk)


def is_gold(comparison: Comparison) -> bool:
    """A leased comparison outside every round that wants no labels is a gold pair (no
    query: both fields come with the submit's lock)."""
    return comparison.round_id is None and comparison.labels_required == 0


def gold_label_store(
    *,
    annotator: User,
    lease: Lease,
    stored_choice: str,
    rationale: str,
    time_taken_ms: int | None,
    idempotency_key: str,
    now: dt.datetime,
) -> Label:
    """Close the gold lease and store the answer: no budget debit, no cost (gold is not a
    training label). Call holding the lease and comparison locks."""
    Lease.objects.filter(pk=lease.pk).update(state=LeaseState.SUBMITTED, closed_at=now)
    Comparison.objects.filter(pk=lease.comparison_id).update(
        leased_count=Greatest(F("leased_count") - 1, 0), updated_at=now
    )
    return Label.objects.create(
        comparison_id=lease.comparison_id,
        campaign_id=lease.campaign_id,
        lease_id=lease.pk,
        source=LabelSource.HUMAN,
        annotator=annotator,
        choice=stored_choice,
        shown_swapped=lease.swapped,
        rationale=rationale,
        time_taken_ms=time_taken_ms,
        idempotency_key=idempotency_key,
        cost=0,
    )
