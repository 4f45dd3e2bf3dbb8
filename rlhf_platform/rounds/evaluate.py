"""Evaluate: every ``eval_every`` rounds (and at the last), the judge's win rate of the
active policy against the initial one on the eval prompts; then the round is done and the
next one opens (or the campaign finishes).
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, transaction

from ml_worker.core import learner, seeds
from ml_worker.core.evaluation import NoValidJudgmentsError, win_rate
from ml_worker.core.judges.base import build_judge
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.egress import judge_egress_policy
from rlhf_platform.campaigns.models import Campaign, CampaignState, Split
from rlhf_platform.rounds.models import Evaluation, ModelKind, Round, RoundState
from rlhf_platform.rounds.opening import (
    campaign_done,
    campaign_open_round,
    is_last_round,
    policy_spec,
    round_rng,
)
from rlhf_platform.rounds.state import advance, beat
from rlhf_platform.rounds.versions import artifact_path, initial_version, require

log = logging.getLogger(__name__)


def evaluate_step(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    last = is_last_round(campaign, rnd)
    due = campaign.eval_every and ((rnd.index + 1) % campaign.eval_every == 0 or last)
    spec = policy_spec(campaign)
    prompts = list(campaign.prompts.filter(split=Split.EVAL).order_by("id")[: spec.eval_prompts])
    if due and prompts:
        active = require(Campaign.objects.get(pk=campaign.pk).active_policy_version)
        initial = initial_version(campaign, ModelKind.POLICY)
        texts = [p.text for p in prompts]
        new = learner.load_policy(spec, artifact_path(active)).greedy(texts)
        beat(rnd, token)
        base = learner.load_policy(spec, artifact_path(initial)).greedy(texts)
        judge = build_judge(
            campaign.judge_config or {"kind": "oracle"}, egress=judge_egress_policy()
        )
        try:
            result = win_rate(
                judge,
                texts,
                new,
                base,
                [p.reference or None for p in prompts],
                seed=round_rng(campaign, rnd, seeds.EVALUATE),
            )
        except NoValidJudgmentsError as exc:
            log.warning("round %s: evaluation skipped: %s", rnd.pk, exc)
            result = None
        if result is not None:
            Evaluation.objects.update_or_create(
                round=rnd,
                defaults={
                    "campaign": campaign,
                    "policy_version": active,
                    "labels_spent": budget_status(campaign_id=campaign.pk).labels_spent,
                    "win_rate": result.mean,
                    "ci_low": result.low,
                    "ci_high": result.high,
                    "n_prompts": len(prompts),
                    "n_invalid": result.n_invalid,
                    "judge": getattr(judge, "judge_id", "judge")[:100],
                },
            )
    with transaction.atomic():
        state = advance(rnd, token, RoundState.DONE)
        if campaign_done(campaign, rnd.index + 1):
            Campaign.objects.filter(pk=campaign.pk, state=CampaignState.RUNNING).update(
                state=CampaignState.FINISHED
            )
        else:
            transaction.on_commit(lambda: _next_round_later(campaign.pk))
    return state


def _next_round_later(campaign_id: int) -> None:
    try:
        campaign_open_round(campaign_id=campaign_id)
    except DatabaseError:
        log.exception("campaign %s: could not open the next round; the sweeper will", campaign_id)
