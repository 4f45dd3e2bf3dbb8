"""Rater exclusion (training and exports leave the rater out; reversible; audited), the
debounced refit, gold pairs (mixed in at the campaign's rate, no budget debit, never
trained on or exported)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from django.core.cache import cache

from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.services import campaign_add_member, campaign_set_state
from rlhf_platform.datafiles import exports
from rlhf_platform.errors import InvalidInput, NotFound, PermissionDenied
from rlhf_platform.insights.models import AuditAction, AuditEntry
from rlhf_platform.labeling import services as labeling
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.labeling.services import NothingToLabel, comparison_next, label_submit
from rlhf_platform.raters.models import GoldPair, RaterExclusion, RaterSettings
from rlhf_platform.raters.services import (
    gold_mark,
    gold_rate_set,
    rater_exclusion_set,
    raters_refit,
    refit_soon,
)
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import ModelKind, ModelVersion, RoundState
from rlhf_platform.rounds.services import campaign_open_round, round_step, round_try_close
from tests.conftest import make_campaign
from tests.rlhf_platform.insights.seed import seed_campaign
from tests.rlhf_platform.raters.conftest import started_gold_campaign
from tests.rlhf_platform.rounds.conftest import live_campaign

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture(params=["sql", "orm"])
def labeling_path(request, monkeypatch) -> str:
    if request.param == "orm":
        monkeypatch.setattr(labeling, "hand_written_sql", lambda: False)
    return request.param


def _label_all(annotator, campaign, choice: str = "A") -> int:
    done = 0
    while True:
        try:
            lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        except NothingToLabel:
            return done
        label_submit(
            annotator=annotator,
            lease_id=lease.pk,
            choice=choice,
            idempotency_key=f"k{lease.pk}",
            time_taken_ms=4000,
        )
        done += 1


# ---- exclusion -----------------------------------------------------------------------------


def test_exclusion_is_honoured_by_exports_and_is_reversible_and_audited(
    researcher, annotator, other_annotator
):
    campaign = seed_campaign(researcher, [annotator, other_annotator])
    before = exports.labels_count(campaign=campaign)
    anna = Label.objects.filter(campaign=campaign, annotator=annotator).count()
    assert rater_exclusion_set(
        actor=researcher,
        campaign=campaign,
        rater=f"user:{annotator.pk}",
        excluded=True,
        reason="random clicking",
    )
    assert exports.labels_count(campaign=campaign) == before - anna
    records = list(exports.label_records(campaign=campaign))
    assert all(r.get("annotator") != annotator.username for r in records)
    prefs = list(exports.preference_records(campaign=campaign))
    assert len(prefs) == exports.preferences_count(campaign=campaign)
    # A judge is a rater too.
    judge = Label.objects.filter(campaign=campaign, source="judge").first().judge_name
    rater_exclusion_set(actor=researcher, campaign=campaign, rater=f"judge:{judge}", excluded=True)
    assert exports.labels_count(campaign=campaign, source="judge") == 0
    # Reversible; a repeat changes nothing and logs nothing.
    assert rater_exclusion_set(
        actor=researcher, campaign=campaign, rater=f"user:{annotator.pk}", excluded=False
    )
    assert not rater_exclusion_set(
        actor=researcher, campaign=campaign, rater=f"user:{annotator.pk}", excluded=False
    )
    assert exports.labels_count(campaign=campaign, source="human") == before - 6
    actions = list(
        AuditEntry.objects.filter(campaign=campaign).order_by("id").values_list("action", flat=True)
    )
    assert actions[-3:] == [
        AuditAction.EXCLUDE_RATER,
        AuditAction.EXCLUDE_RATER,
        AuditAction.INCLUDE_RATER,
    ]
    assert RaterExclusion.objects.filter(campaign=campaign).count() == 1


def test_exclusion_refuses_outsiders_and_unknown_raters(researcher, annotator, outsider):
    campaign = seed_campaign(researcher, [annotator])
    with pytest.raises(PermissionDenied):
        rater_exclusion_set(
            actor=annotator, campaign=campaign, rater=f"user:{annotator.pk}", excluded=True
        )
    with pytest.raises(NotFound):
        rater_exclusion_set(
            actor=researcher, campaign=campaign, rater=f"user:{outsider.pk}", excluded=True
        )
    with pytest.raises(InvalidInput):
        rater_exclusion_set(actor=researcher, campaign=campaign, rater="bob", excluded=True)
    assert not AuditEntry.objects.filter(campaign=campaign).exists()


def _round_to_labeling(campaign):
    with dispatch.inline():
        rnd = campaign_open_round(campaign_id=campaign.pk)
        while rnd.state != RoundState.LABELING:
            assert round_step(round_id=rnd.pk) is not None
            rnd.refresh_from_db()
    return rnd


def _learn(rnd):
    with dispatch.inline():
        assert round_try_close(round_id=rnd.pk) == RoundState.LEARNING
        state = round_step(round_id=rnd.pk)
    assert state == RoundState.EVALUATING, state


@pytest.mark.parametrize("weighting", ["off", "weighted"])
def test_exclusion_is_honoured_by_training(researcher, annotator, other_annotator, weighting):
    campaign = live_campaign(
        researcher,
        name=f"excl-{weighting}",
        algorithm="online",
        feedback_mode="human",
        labels_per_comparison=2,
    )
    campaign.reward_config = campaign.reward_config | {"rater_weighting": weighting}
    campaign.save(update_fields=["reward_config"])
    for user in (annotator, other_annotator):
        campaign_add_member(campaign=campaign, user=user)
    campaign_set_state(campaign=campaign, action="start")
    rnd = _round_to_labeling(campaign)
    assert _label_all(annotator, campaign, "A") == campaign.prompts_per_round
    assert _label_all(other_annotator, campaign, "B") == campaign.prompts_per_round
    rater_exclusion_set(
        actor=researcher, campaign=campaign, rater=f"user:{other_annotator.pk}", excluded=True
    )
    _learn(rnd)
    reward = ModelVersion.objects.get(round=rnd, kind=ModelKind.REWARD)
    # Only anna's labels reached the reward model.
    assert reward.metrics["labels"] == campaign.prompts_per_round
    assert reward.metrics["n_new"] == campaign.prompts_per_round
    if weighting == "weighted":
        assert RaterSettings.objects.get(campaign=campaign).labels_fitted == 2 * 4


# ---- refit -----------------------------------------------------------------------------------


def test_refit_estimates_every_rater_and_judge_and_warm_starts(
    researcher, annotator, other_annotator
):
    campaign = seed_campaign(researcher, [annotator, other_annotator])
    row = raters_refit(campaign_id=campaign.pk)
    judge = Label.objects.filter(campaign=campaign, source="judge").first().judge_name
    assert set(row.estimates) == {
        f"user:{annotator.pk}",
        f"user:{other_annotator.pk}",
        f"judge:{judge}",
    }
    assert row.labels_fitted == Label.objects.filter(campaign=campaign).count()
    assert row.warm_start["confusion"]
    again = raters_refit(campaign_id=campaign.pk)
    assert again.iterations <= row.iterations


def test_refit_is_debounced_per_campaign(
    researcher, annotator, monkeypatch, django_capture_on_commit_callbacks
):
    from rlhf_platform.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    campaign = make_campaign(researcher, members=(annotator,), pairs=3)
    with django_capture_on_commit_callbacks(execute=True):
        refit_soon(campaign.pk)
        refit_soon(campaign.pk)
    with django_capture_on_commit_callbacks(execute=True):
        refit_soon(campaign.pk)
    assert sent == [("raters.refit", {"args": [campaign.pk], "countdown": 60})]
    cache.delete(f"raters:refit:{campaign.pk}")  # a minute later
    with django_capture_on_commit_callbacks(execute=True):
        refit_soon(campaign.pk)
    assert len(sent) == 2


# ---- gold ------------------------------------------------------------------------------------


def test_gold_pairs_are_mixed_in_never_debited_never_trained_or_exported(
    researcher, annotator, labeling_path
):
    campaign = started_gold_campaign(researcher, (annotator,), pairs=6, gold=3)
    gold_rate_set(actor=researcher, campaign=campaign, rate=0.5)
    gold_ids = set(
        GoldPair.objects.filter(campaign=campaign).values_list("comparison_id", flat=True)
    )
    served = []
    rng = random.Random(0)
    while True:
        try:
            lease = comparison_next(annotator=annotator, campaign_id=campaign.pk, rng=rng).lease
        except NothingToLabel:
            break
        served.append(lease.comparison_id)
        label_submit(
            annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key=f"g{lease.pk}"
        )
    gold_served = [c for c in served if c in gold_ids]
    assert 1 <= len(gold_served) <= 3 and len(served) == 6 + len(gold_served)
    assert len(set(served)) == len(served)  # never the same pair twice
    budget = Budget.objects.get(campaign=campaign)
    assert budget.labels_spent == 6 and budget.cost_spent == Decimal("0.60")
    gold_labels = Label.objects.filter(comparison_id__in=gold_ids)
    assert gold_labels.count() == len(gold_served)
    assert all(lab.cost == 0 for lab in gold_labels)
    assert exports.labels_count(campaign=campaign) == 6
    # Gold pairs stay out of the ordinary queue and their counts stay consistent.
    assert all(
        c.labels_count == 0 and c.leased_count == 0
        for c in Comparison.objects.filter(pk__in=gold_ids)
    )


def test_gold_rate_zero_serves_no_gold(researcher, annotator):
    campaign = started_gold_campaign(researcher, (annotator,), pairs=6, gold=3)
    assert _label_all(annotator, campaign) == 6
    assert not Label.objects.filter(comparison__gold__isnull=False).exists()


def test_gold_rate_and_answers_are_validated(researcher, annotator):
    campaign = started_gold_campaign(researcher, (annotator,), pairs=6, gold=3)
    for bad in (-0.1, 0.9, "lots", True, None):
        with pytest.raises(InvalidInput):
            gold_rate_set(actor=researcher, campaign=campaign, rate=bad)
    with pytest.raises(PermissionDenied):
        gold_rate_set(actor=annotator, campaign=campaign, rate=0.1)
    comp = Comparison.objects.filter(campaign=campaign, gold__isnull=True).first()
    with pytest.raises(InvalidInput):
        gold_mark(actor=researcher, campaign=campaign, comparison_id=comp.pk, answer="left")
    from rlhf_platform.campaigns.services import comparisons_import_pairs

    with pytest.raises(InvalidInput):
        comparisons_import_pairs(
            campaign=campaign,
            pairs=[{"prompt": "p", "response_a": "a", "response_b": "b", "gold": "C"}],
        )


def test_marking_gold_in_the_browser_serves_a_copy_to_others_only(
    researcher, annotator, other_annotator
):
    campaign = make_campaign(researcher, members=(annotator, other_annotator), pairs=2)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key="x")
    gold = gold_mark(
        actor=researcher, campaign=campaign, comparison_id=lease.comparison_id, answer="A"
    )
    assert gold.source_id == lease.comparison_id and gold.comparison_id != lease.comparison_id
    gold_rate_set(actor=researcher, campaign=campaign, rate=0.5)
    # anna labeled the source: she is never served its gold copy.
    rng = random.Random(1)
    for _ in range(5):
        try:
            nxt = comparison_next(annotator=annotator, campaign_id=campaign.pk, rng=rng).lease
        except NothingToLabel:
            break
        assert nxt.comparison_id != gold.comparison_id
        label_submit(annotator=annotator, lease_id=nxt.pk, choice="A", idempotency_key=f"a{nxt.pk}")
    # The source's labels are measured against the answer, never trained on or exported.
    assert not any(
        r["comparison_id"] == lease.comparison_id for r in exports.label_records(campaign=campaign)
    )
    row = raters_refit(campaign_id=campaign.pk)
    est = row.estimates[f"user:{annotator.pk}"]
    stored = Label.objects.get(comparison_id=lease.comparison_id).choice  # in A/B terms
    assert est["n_gold"] == 1 and est["gold_correct"] == int(stored == "A")


def test_a_gold_label_can_be_undone_and_answered_again(researcher, annotator, labeling_path):
    campaign = started_gold_campaign(researcher, (annotator,), pairs=1, gold=1)
    gold_rate_set(actor=researcher, campaign=campaign, rate=0.5)
    gold_id = GoldPair.objects.get(campaign=campaign).comparison_id
    rng = random.Random(0)
    for _ in range(50):  # each call draws gold or not again
        try:
            lease = comparison_next(annotator=annotator, campaign_id=campaign.pk, rng=rng).lease
        except NothingToLabel:
            continue
        if lease.comparison_id == gold_id:
            break
        label_submit(annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="n")
    label, _ = label_submit(annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key="g")
    labeling.label_undo(annotator=annotator, label_id=label.pk)
    again, created = label_submit(
        annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="g2"
    )
    assert created and again.cost == 0
    gold = Comparison.objects.get(pk=gold_id)
    assert (gold.labels_count, gold.leased_count) == (0, 0)
    assert Budget.objects.get(campaign=campaign).labels_spent == 1  # the ordinary pair only
    from rlhf_platform.campaigns.selectors import campaign_progress

    assert campaign_progress(campaign).comparisons == 1


def test_the_refit_task_is_a_thin_wrapper(researcher, annotator, other_annotator):
    from rlhf_platform.raters.tasks import refit

    campaign = seed_campaign(researcher, [annotator, other_annotator])
    assert refit(campaign.pk) == Label.objects.filter(campaign=campaign).count()
    assert refit(10**9) == 0  # a deleted campaign: nothing to do, no error
