"""Opening a campaign's rounds, and what every step of a round draws on: whether the
campaign is done (its rounds or its budget used up), each round's seeds, the campaign's
policy spec.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from ml_worker.core import learner, seeds
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.models import Algorithm, Campaign, CampaignState
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import ModelVersion, Round, RoundState
from rlhf_platform.rounds.versions import ensure_initial_versions


def campaign_done(campaign: Campaign, rounds_done: int) -> str | None:
    if campaign.max_rounds is not None and rounds_done >= campaign.max_rounds:
        return f"all {campaign.max_rounds} rounds done"
    status = budget_status(campaign_id=campaign.pk)
    if status.exhausted:
        return f"budget spent ({status.reason})"
    return None


def is_last_round(campaign: Campaign, rnd: Round) -> bool:
    return campaign_done(campaign, rnd.index + 1) is not None


def round_rng(campaign: Campaign, rnd: Round, salt: int) -> int:
    return seeds.round_seed(campaign.seed, rnd.index, salt)


def policy_spec(campaign: Campaign) -> learner.PolicySpec:
    return learner.PolicySpec.from_config(campaign.policy_config)


def campaign_open_round(*, campaign_id: int) -> Round | None:
    """Open the campaign's next round if it is running, live, and has none open.

    Finishes the campaign instead when its rounds or its budget are used up.
    """
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None or not campaign.runs_rounds or campaign.state != CampaignState.RUNNING:
        return None
    open_round = campaign.rounds.exclude(state=RoundState.DONE).first()
    if open_round is not None:
        return open_round
    done = campaign.rounds.filter(state=RoundState.DONE).count()
    if campaign_done(campaign, done):
        Campaign.objects.filter(pk=campaign.pk, state=CampaignState.RUNNING).update(
            state=CampaignState.FINISHED
        )
        return None
    policy_v, reward_v = ensure_initial_versions(campaign)
    campaign.refresh_from_db()
    policy_for_queries: ModelVersion | None
    if campaign.algorithm == Algorithm.OFFLINE:
        policy_for_queries = policy_v  # offline: every query comes from the initial policy
    else:
        policy_for_queries = campaign.active_policy_version
    try:
        with transaction.atomic():
            rnd = Round.objects.create(
                campaign=campaign,
                index=done,
                state=RoundState.GENERATING,
                policy_version=policy_for_queries,
                reward_version=campaign.active_reward_version,
                transitions=[[RoundState.GENERATING, timezone.now().isoformat()]],
            )
            dispatch.step(rnd.pk)
    except IntegrityError:
        return campaign.rounds.exclude(state=RoundState.DONE).first()  # opened concurrently
    return rnd
