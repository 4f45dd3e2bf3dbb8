"""Label: the judge labels the comparisons that ask for it, and a labeling round closes
once every comparison is labeled, its deadline passed or the budget is spent.

Also the judge trial of the New campaign page (one fixed pair put to a judge configuration).
"""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ml_worker.core import seeds
from ml_worker.core.choice import Choice
from ml_worker.core.judges.base import (
    JudgeAuthError,
    JudgeConfigError,
    JudgeQuery,
    JudgeResult,
    build_judge,
)
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.egress import judge_egress_policy
from rlhf_platform.errors import BudgetExhausted
from rlhf_platform.labeling.models import Comparison, JudgeCall, LabelSource
from rlhf_platform.labeling.services import (
    comparison_hand_to_humans,
    label_record,
    leases_expire_with_comparisons,
)
from rlhf_platform.raters.services import refit_soon
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.opening import round_rng
from rlhf_platform.rounds.state import advance, new_token, round_claim, round_fail


def needs_judge(rnd_id: int) -> QuerySet[Comparison]:
    return (
        Comparison.objects.filter(round_id=rnd_id, judge_requested=True)
        .exclude(labels__source=LabelSource.JUDGE)
        .select_related("prompt", "response_a", "response_b")
        .order_by("id")
    )


def round_judge(*, round_id: int, batch_size: int = seeds.JUDGE_BATCH) -> int:
    """Let the campaign's judge label the round's comparisons that ask for it.

    Valid answers become labels (debited at the judge's unit cost, one per comparison);
    invalid ones are recorded as ``JudgeCall`` rows and never counted. A comparison whose
    judge answers stay invalid after ``JUDGE_MAX_ATTEMPTS`` goes to the human queue.
    Returns how many comparisons still wait for a retry.
    """
    rnd = Round.objects.select_related("campaign").filter(pk=round_id).first()
    if rnd is None or rnd.state != RoundState.LABELING:
        return 0
    campaign = rnd.campaign
    try:
        # Checked again here, and per connection: DNS may have changed since the campaign
        # was saved, and the allow-list too.
        judge = build_judge(
            campaign.judge_config or {"kind": "oracle"}, egress=judge_egress_policy()
        )
    except JudgeConfigError as exc:
        round_fail(round_id=round_id, reason=f"judge: {exc}")
        return 0
    judge_name = getattr(judge, "judge_id", campaign.judge_config.get("kind", "judge"))[:100]
    rng = random.Random(round_rng(campaign, rnd, seeds.JUDGE_SWAPS))  # noqa: S311 (seeded, reproducible sampling; no secret)
    budget_spent = False
    pending = list(needs_judge(round_id))
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        swaps = [rng.random() < 0.5 for _ in chunk]  # position randomized, as for humans
        queries = []
        for c, swap in zip(chunk, swaps, strict=True):
            a, b = (c.response_b, c.response_a) if swap else (c.response_a, c.response_b)
            queries.append(JudgeQuery(c.prompt.text, a.text, b.text, c.prompt.reference or None))
        try:
            results = judge.judge(queries, seed=seeds.judge_seed(campaign.seed, rnd.index, start))
        except (JudgeAuthError, JudgeConfigError) as exc:  # no retry can fix these
            round_fail(round_id=round_id, reason=f"judge: {exc}")
            return 0
        for c, swap, result in zip(chunk, swaps, results, strict=True):
            try:
                _record_judgment(c, swap, result, judge_name)
            except BudgetExhausted:
                budget_spent = True
                break
            except IntegrityError:
                continue  # judged meanwhile by another run of this task (a resent message)
        if budget_spent:
            break
    retry = 0
    if not budget_spent:
        for c in needs_judge(round_id):
            attempts = c.judge_calls.count()
            if attempts >= settings.JUDGE_MAX_ATTEMPTS:
                comparison_hand_to_humans(comparison_id=c.pk)
            else:
                retry += 1
    round_try_close(round_id=round_id)
    return retry


@transaction.atomic
def _record_judgment(
    comparison: Comparison, swapped: bool, result: JudgeResult, judge_name: str
) -> None:
    attempt = comparison.judge_calls.count() + 1
    choice = result.choice if result.valid else None
    if choice is not None and swapped:
        choice = Choice(choice).swapped()
    prob_a = result.prob_a
    if prob_a is not None and swapped:
        prob_a = 1.0 - prob_a
    JudgeCall.objects.create(
        comparison=comparison,
        judge_name=judge_name,
        valid=bool(result.valid),
        invalid_reason=result.invalid_reason or "",
        prob_a=prob_a,
        choice=choice or "",
        order_disagreement=result.order_disagreement,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        attempt=attempt,
    )
    if choice is None:  # an invalid answer (a valid one always has a choice)
        return
    # The row lock a human submit of the same comparison (mixed feedback) also takes, so the
    # state written from the counts below is current.
    locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
    label_record(
        comparison=locked,
        source=LabelSource.JUDGE,
        choice=choice,
        shown_swapped=swapped,
        idempotency_key=f"judge:{comparison.pk}",
        judge_name=judge_name,
        judge_prob_a=prob_a,
        tokens=result.tokens_in + result.tokens_out,
    )
    refit_soon(comparison.campaign_id)  # the judge is a rater too (issue 20)


def _complete_q() -> Q:
    judged = Q(judge_requested=False) | Q(labels__source=LabelSource.JUDGE)
    return Q(labels_count__gte=F("labels_required")) & judged


def round_try_close(*, round_id: int) -> str | None:
    """Close a labeling round when all its comparisons are labeled, its deadline passed,
    or the budget is spent; unlabeled comparisons are recorded as leftovers."""
    rnd = Round.objects.select_related("campaign").filter(pk=round_id).first()
    if rnd is None or rnd.state != RoundState.LABELING:
        return None
    comps = Comparison.objects.filter(round=rnd)
    open_ids = list(
        comps.exclude(pk__in=comps.filter(_complete_q()).values("pk")).values_list("pk", flat=True)
    )
    overdue = rnd.deadline is not None and rnd.deadline <= timezone.now()
    spent = budget_status(campaign_id=rnd.campaign_id).exhausted
    if open_ids and not overdue and not spent:
        return RoundState.LABELING
    token = new_token()
    if not round_claim(round_id=round_id, state=RoundState.LABELING, token=token):
        return None
    with transaction.atomic():
        if open_ids:
            leases_expire_with_comparisons(comparison_ids=open_ids, now=timezone.now())
        Round.objects.filter(pk=rnd.pk).update(leftovers=len(open_ids))
        state = advance(rnd, token, RoundState.LEARNING)
        dispatch.step(rnd.pk)
    return state


def judge_trial_run(*, trial_id: int) -> str:
    """Put the fixed pair (:data:`rlhf_platform.insights.models.TRIAL_PAIR`) to the trial's
    judge configuration and record the answer, or why it is invalid or failed. Returns the
    trial's final state."""
    from rlhf_platform.insights.models import TRIAL_PAIR, JudgeTrial, JudgeTrialState

    trial = JudgeTrial.objects.filter(pk=trial_id, state=JudgeTrialState.PENDING).first()
    if trial is None:
        return ""
    fields: dict[str, Any] = {"finished_at": timezone.now()}
    try:
        judge = build_judge(trial.judge_config, egress=judge_egress_policy())
        (result,) = judge.judge([JudgeQuery(**TRIAL_PAIR)], seed=0)
    except Exception as exc:  # noqa: BLE001 (anything: shown to the researcher, never raised)
        fields |= {"state": JudgeTrialState.FAILED, "message": f"{type(exc).__name__}: {exc}"}
    else:
        if result.invalid_reason:
            fields |= {"state": JudgeTrialState.FAILED, "message": result.invalid_reason}
        else:
            fields |= {
                "state": JudgeTrialState.DONE,
                "prob_a": result.prob_a,
                "choice": result.choice or "",
            }
    JudgeTrial.objects.filter(pk=trial.pk).update(**{k: v for k, v in fields.items()})
    return str(fields["state"])
