from __future__ import annotations

import datetime as dt
import random

import pytest
from django.utils import timezone

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.errors import BudgetExhausted, Conflict, InvalidInput, NotFound
from rlhf_platform.labeling.models import Comparison, ComparisonState, Label, Lease, LeaseState
from rlhf_platform.labeling.selectors import lease_display
from rlhf_platform.labeling.services import (
    NothingToLabel,
    comparison_next,
    label_submit,
    lease_renew,
    lease_skip,
    leases_release_expired,
)
from tests.conftest import make_campaign

pytestmark = pytest.mark.django_db


def _submit(user, lease, choice="A", key=None, **kw):
    return label_submit(
        annotator=user,
        lease_id=lease.pk,
        choice=choice,
        idempotency_key=key or f"k-{lease.pk}",
        **kw,
    )


def _expire(lease):
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))


class TestComparisonNext:
    def test_it_leases_the_highest_priority_comparison(self, campaign, annotator):
        served = comparison_next(annotator=annotator, campaign_id=campaign.pk)
        top = Comparison.objects.filter(campaign=campaign).order_by("-priority").first()
        assert served.created and served.lease.comparison_id == top.pk
        top.refresh_from_db()
        assert top.leased_count == 1 and top.state == ComparisonState.LEASED

    def test_it_returns_the_live_lease_again(self, campaign, annotator):
        first = comparison_next(annotator=annotator, campaign_id=campaign.pk)
        again = comparison_next(annotator=annotator, campaign_id=campaign.pk)
        assert not again.created and again.lease.pk == first.lease.pk
        assert Lease.objects.filter(annotator=annotator).count() == 1

    def test_it_gives_two_annotators_different_comparisons(
        self, campaign, annotator, other_annotator
    ):
        a = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        b = comparison_next(annotator=other_annotator, campaign_id=campaign.pk).lease
        assert a.comparison_id != b.comparison_id

    def test_overlap_two_serves_one_comparison_to_two_annotators(
        self, researcher, annotator, other_annotator
    ):
        c = make_campaign(
            researcher, name="overlap", pairs=1, overlap=2, members=(annotator, other_annotator)
        )
        a = comparison_next(annotator=annotator, campaign_id=c.pk).lease
        b = comparison_next(annotator=other_annotator, campaign_id=c.pk).lease
        assert a.comparison_id == b.comparison_id

    def test_it_never_serves_a_comparison_the_annotator_labeled(self, researcher, annotator):
        c = make_campaign(researcher, name="one", pairs=1, overlap=2, members=(annotator,))
        _submit(annotator, comparison_next(annotator=annotator, campaign_id=c.pk).lease)
        with pytest.raises(NothingToLabel):
            comparison_next(annotator=annotator, campaign_id=c.pk)

    def test_it_refuses_a_campaign_the_annotator_does_not_belong_to(
        self, foreign_campaign, annotator
    ):
        with pytest.raises(NotFound):
            comparison_next(annotator=annotator, campaign_id=foreign_campaign.pk)
        assert not Lease.objects.exists()

    def test_it_refuses_a_paused_campaign(self, campaign, annotator):
        campaign_set_state(campaign=campaign, action="pause")
        with pytest.raises(Conflict) as exc:
            comparison_next(annotator=annotator, campaign_id=campaign.pk)
        assert exc.value.code == "campaign_not_running"

    def test_swap_is_random_per_lease_and_recorded(self, researcher, annotator):
        c = make_campaign(researcher, name="swap", pairs=40, members=(annotator,))
        rng = random.Random(1)
        swaps = []
        for _ in range(40):
            lease = comparison_next(annotator=annotator, campaign_id=c.pk, rng=rng).lease
            shown = lease_display(lease)
            comp = lease.comparison
            expected_left = comp.response_b.text if lease.swapped else comp.response_a.text
            assert shown["response_a"] == expected_left
            swaps.append(lease.swapped)
            lease_skip(annotator=annotator, lease_id=lease.pk)
        assert 5 < sum(swaps) < 35

    def test_lease_time_is_configurable(self, campaign, annotator):
        lease = comparison_next(
            annotator=annotator, campaign_id=campaign.pk, lease_seconds=42
        ).lease
        assert 40 <= (lease.expires_at - lease.created_at).total_seconds() <= 43

    def test_an_expired_live_lease_is_replaced(self, campaign, annotator):
        old = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        _expire(old)
        new = comparison_next(annotator=annotator, campaign_id=campaign.pk)
        old.refresh_from_db()
        assert new.created and old.state == LeaseState.EXPIRED

    def test_it_stops_serving_when_the_label_cap_is_reached(self, researcher, annotator):
        c = make_campaign(researcher, name="capped", pairs=3, label_cap=1, members=(annotator,))
        _submit(annotator, comparison_next(annotator=annotator, campaign_id=c.pk).lease)
        with pytest.raises(BudgetExhausted) as exc:
            comparison_next(annotator=annotator, campaign_id=c.pk)
        assert exc.value.code == "budget_exhausted" and "1 of 1" in exc.value.message


class TestLabelSubmit:
    def test_it_stores_the_label_and_debits_the_budget(self, campaign, annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        label, created = _submit(annotator, lease, "B", rationale="clearer", time_taken_ms=1200)
        assert created
        budget = Budget.objects.get(campaign=campaign)
        assert budget.labels_spent == 1 and budget.cost_spent == label.cost > 0
        assert LedgerEntry.objects.get(label=label).amount == label.cost
        lease.refresh_from_db()
        label.comparison.refresh_from_db()
        assert lease.state == LeaseState.SUBMITTED
        assert (
            label.comparison.labels_count == 1 and label.comparison.state == ComparisonState.LABELED
        )
        assert label.rationale == "clearer" and label.time_taken_ms == 1200

    @pytest.mark.parametrize(
        "swapped,shown,stored",
        [
            (False, "A", "A"),
            (False, "B", "B"),
            (True, "A", "B"),
            (True, "B", "A"),
            (True, "tie", "tie"),
            (True, "both_bad", "both_bad"),
        ],
    )
    def test_the_shown_choice_maps_to_the_comparisons_order(
        self, campaign, annotator, swapped, shown, stored
    ):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        Lease.objects.filter(pk=lease.pk).update(swapped=swapped)
        label, _ = _submit(annotator, lease, shown)
        assert label.choice == stored and label.shown_swapped == swapped

    def test_a_retry_with_the_same_key_returns_the_same_label(self, campaign, annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        first, created1 = _submit(annotator, lease, key="same")
        again, created2 = _submit(annotator, lease, key="same")
        assert created1 and not created2 and first.pk == again.pk
        assert Label.objects.count() == 1 and LedgerEntry.objects.count() == 1

    def test_a_key_reused_for_another_lease_is_refused(self, campaign, annotator):
        _submit(
            annotator, comparison_next(annotator=annotator, campaign_id=campaign.pk).lease, key="k"
        )
        second = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        with pytest.raises(Conflict) as exc:
            _submit(annotator, second, key="k")
        assert exc.value.code == "idempotency_key_reused" and Label.objects.count() == 1

    def test_another_annotators_lease_is_not_found(self, campaign, annotator, other_annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        with pytest.raises(NotFound):
            _submit(other_annotator, lease)
        assert not Label.objects.exists()

    @pytest.mark.parametrize(
        "kwargs,code",
        [
            ({"choice": "C"}, "invalid_choice"),
            ({"rationale": "x" * 2001}, "rationale_too_long"),
            ({"key": "k" * 101}, "invalid_idempotency_key"),
        ],
    )
    def test_invalid_input_writes_nothing(self, campaign, annotator, kwargs, code):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        with pytest.raises(InvalidInput) as exc:
            _submit(annotator, lease, **kwargs)
        assert exc.value.code == code
        assert not Label.objects.exists() and not LedgerEntry.objects.exists()

    def test_an_expired_lease_is_refused(self, campaign, annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        _expire(lease)
        with pytest.raises(Conflict) as exc:
            _submit(annotator, lease)
        assert exc.value.code == "lease_expired" and not Label.objects.exists()

    def test_a_skipped_lease_cannot_be_labeled(self, campaign, annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        lease_skip(annotator=annotator, lease_id=lease.pk)
        with pytest.raises(Conflict) as exc:
            _submit(annotator, lease)
        assert exc.value.code == "lease_closed"

    def test_a_spent_cost_cap_refuses_and_writes_nothing(
        self, researcher, annotator, other_annotator
    ):
        from decimal import Decimal

        c = make_campaign(
            researcher,
            name="cost",
            pairs=3,
            cost_cap=Decimal("0.10"),
            members=(annotator, other_annotator),
        )
        l1 = comparison_next(annotator=annotator, campaign_id=c.pk).lease
        l2 = comparison_next(annotator=other_annotator, campaign_id=c.pk).lease
        _submit(annotator, l1)
        with pytest.raises(BudgetExhausted):
            _submit(other_annotator, l2)
        assert Label.objects.count() == 1
        assert Budget.objects.get(campaign=c).cost_spent == Decimal("0.10")

    def test_the_daily_cap_per_annotator_holds(self, researcher, annotator):
        c = make_campaign(
            researcher, name="daily", pairs=4, annotator_daily_cap=2, members=(annotator,)
        )
        for _ in range(2):
            _submit(annotator, comparison_next(annotator=annotator, campaign_id=c.pk).lease)
        with pytest.raises(BudgetExhausted) as exc:
            comparison_next(annotator=annotator, campaign_id=c.pk)
        assert exc.value.code == "daily_cap_reached"


class TestSkipRenewExpire:
    def test_skip_frees_the_slot_and_is_not_served_again(self, researcher, annotator):
        c = make_campaign(researcher, name="skip", pairs=1, members=(annotator,))
        lease = comparison_next(annotator=annotator, campaign_id=c.pk).lease
        lease_skip(annotator=annotator, lease_id=lease.pk)
        comp = Comparison.objects.get(pk=lease.comparison_id)
        assert comp.leased_count == 0 and comp.state == ComparisonState.QUEUED
        with pytest.raises(NothingToLabel):
            comparison_next(annotator=annotator, campaign_id=c.pk)

    def test_renew_extends_a_live_lease(self, campaign, annotator):
        lease = comparison_next(
            annotator=annotator, campaign_id=campaign.pk, lease_seconds=20
        ).lease
        renewed = lease_renew(annotator=annotator, lease_id=lease.pk, lease_seconds=600)
        assert renewed.expires_at > lease.expires_at + dt.timedelta(seconds=500)

    def test_renew_refuses_an_expired_lease(self, campaign, annotator):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        _expire(lease)
        with pytest.raises(Conflict):
            lease_renew(annotator=annotator, lease_id=lease.pk)

    def test_release_expired_frees_only_overdue_leases(self, campaign, annotator, other_annotator):
        overdue = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        live = comparison_next(annotator=other_annotator, campaign_id=campaign.pk).lease
        _expire(overdue)
        assert leases_release_expired() == 1
        overdue.refresh_from_db()
        live.refresh_from_db()
        assert overdue.state == LeaseState.EXPIRED and live.state == LeaseState.ACTIVE
        comp = Comparison.objects.get(pk=overdue.comparison_id)
        assert comp.leased_count == 0 and comp.state == ComparisonState.QUEUED
        assert leases_release_expired() == 0

    def test_release_expired_works_in_batches(self, researcher):
        from tests.conftest import make_user

        users = [make_user(f"u{i}") for i in range(5)]
        c = make_campaign(researcher, name="batches", pairs=5, members=tuple(users))
        for u in users:
            _expire(comparison_next(annotator=u, campaign_id=c.pk).lease)
        assert leases_release_expired(batch_size=2) == 5
        assert not Lease.objects.filter(state=LeaseState.ACTIVE).exists()
