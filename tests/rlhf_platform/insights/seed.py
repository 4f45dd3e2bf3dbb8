"""A campaign with known rounds, evaluations, comparisons, human and judge labels and ledger
entries, written straight to the database so that every figure on the pages is known.

Shared by the insights, exports and browser tests.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from rlhf_platform.budgets.services import budget_debit, budget_lock
from rlhf_platform.campaigns.models import Campaign, Prompt
from rlhf_platform.campaigns.services import campaign_add_member, campaign_create
from rlhf_platform.labeling.models import Comparison, ComparisonState, JudgeCall, Label
from rlhf_platform.rounds.models import (
    Evaluation,
    ModelKind,
    ModelVersion,
    Response,
    Round,
    VersionState,
)

# Per comparison: (human labels by annotator index, judge choice, judge P(A), order flip).
# Choices are in the comparison's A/B terms.
LABELS = [
    ({0: "A", 1: "A"}, "A", 0.9, False),
    ({0: "A", 1: "B"}, "A", 0.8, False),
    ({0: "B", 1: "B"}, "B", 0.2, True),
    ({0: "tie", 1: "A"}, "A", 0.7, False),
    ({0: "B", 1: "B"}, "A", 0.95, False),  # the strongest disagreement
    ({0: "A", 1: "A"}, "A", 0.6, None),
]
# (round index, labels spent, win rate, ci low, ci high): w(n) = 1 - 0.5 (n/a)^-b, a=4, b=0.5.
EVALS = [(0, 4, 0.5, 0.4, 0.6), (1, 16, 0.75, 0.65, 0.85), (2, 64, 0.875, 0.8, 0.95)]


def seed_campaign(
    owner,
    annotators,
    *,
    name: str = "Seeded",
    algorithm: str = "infomax",
    evals=EVALS,
    label_cap: int | None = 40,
) -> Campaign:
    campaign = campaign_create(
        owner=owner,
        name=name,
        algorithm=algorithm,
        feedback_mode="mixed",
        labels_per_comparison=len(annotators),
        label_cap=label_cap,
        human_label_cost=Decimal("0.50"),
        judge_call_cost=Decimal("0.01"),
    )
    for user in annotators:
        campaign_add_member(campaign=campaign, user=user)
    base = timezone.now() - dt.timedelta(hours=3)
    rounds = []
    for index, (_, labels_spent, win, lo, hi) in enumerate(evals):
        start = base + dt.timedelta(minutes=20 * index)
        marks = [("generating", 0), ("selecting", 1), ("labeling", 2), ("learning", 12)]
        marks += [("evaluating", 14), ("done", 15)]
        rnd = Round.objects.create(
            campaign=campaign,
            index=index,
            state="done",
            transitions=[[s, (start + dt.timedelta(minutes=m)).isoformat()] for s, m in marks],
            finished_at=start + dt.timedelta(minutes=15),
        )
        Round.objects.filter(pk=rnd.pk).update(started_at=start)
        reward = ModelVersion.objects.create(
            campaign=campaign,
            kind=ModelKind.REWARD,
            round=rnd,
            state=VersionState.READY,
            metrics={"loss": 0.6 - 0.1 * index},
        )
        policy = ModelVersion.objects.create(
            campaign=campaign, kind=ModelKind.POLICY, round=rnd, state=VersionState.READY
        )
        Evaluation.objects.create(
            campaign=campaign,
            round=rnd,
            policy_version=policy,
            labels_spent=labels_spent,
            win_rate=win,
            ci_low=lo,
            ci_high=hi,
            n_prompts=8,
            judge="oracle",
        )
        rounds.append((rnd, reward, policy))
    for i, (humans, judge_choice, judge_p, flip) in enumerate(LABELS):
        rnd, reward, policy = rounds[i % len(rounds)]
        humans = {k: v for k, v in humans.items() if k < len(annotators)}
        prompt = Prompt.objects.create(campaign=campaign, text=f"Seeded prompt {i}?")
        a = Response.objects.create(prompt=prompt, round=rnd, text=f"Answer A{i}.")
        b = Response.objects.create(prompt=prompt, round=rnd, text=f"Answer B{i}.")
        comparison = Comparison.objects.create(
            campaign=campaign,
            round=rnd,
            prompt=prompt,
            response_a=a,
            response_b=b,
            acquisition_rule="infomax",
            acquisition_score=0.01 * (i + 1),
            p_mean=0.7 if i % 2 == 0 else 0.3,
            p_var=0.01,
            policy_version=policy,
            reward_version=reward,
            labels_required=len(annotators),
            judge_requested=True,
            labels_count=len(humans),
            state=ComparisonState.LABELED,
        )
        for k, (who, choice) in enumerate(humans.items()):
            _label(
                campaign,
                comparison,
                source="human",
                annotator=annotators[who],
                choice=choice,
                swapped=(i + k) % 2 == 1,
                ms=2000 + 1000 * who,
            )
        JudgeCall.objects.create(
            comparison=comparison,
            judge_name="oracle",
            valid=True,
            prob_a=judge_p,
            choice=judge_choice,
            order_disagreement=flip,
            tokens_in=100,
            tokens_out=5,
        )
        _label(
            campaign,
            comparison,
            source="judge",
            annotator=None,
            choice=judge_choice,
            swapped=i % 3 == 0,
            prob=judge_p,
        )
    return campaign


@transaction.atomic  # budget_lock locks the row: needs a transaction
def _label(campaign, comparison, *, source, annotator, choice, swapped, ms=None, prob=None):
    budget = budget_lock(campaign_id=campaign.pk)
    label = Label.objects.create(
        comparison=comparison,
        campaign=campaign,
        source=source,
        annotator=annotator,
        judge_name="oracle" if source == "judge" else "",
        judge_prob_a=prob,
        choice=choice,
        shown_swapped=swapped,
        time_taken_ms=ms,
        idempotency_key=f"seed:{comparison.pk}:{annotator.pk if annotator else 'judge'}",
    )
    entry = budget_debit(
        budget=budget,
        source=source,
        annotator_id=annotator.pk if annotator else None,
        label_id=label.pk,
        tokens=105 if source == "judge" else 0,
    )
    Label.objects.filter(pk=label.pk).update(cost=entry.amount)
    return label
