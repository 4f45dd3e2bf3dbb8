"""Select: for each prompt, the campaign's acquisition rule picks one pair among its K
responses, which becomes a comparison for humans, the judge, or both (mixed feedback).
"""

from __future__ import annotations

import datetime as dt
import random

from django.db import transaction
from django.utils import timezone

from ml_worker.core import learner, seeds
from ml_worker.core import rounds as core_rounds
from ml_worker.core.acquisition import distinct_responses
from rlhf_platform.campaigns.models import FeedbackMode
from rlhf_platform.labeling.models import Comparison
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.generate import response_features, round_groups
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.opening import policy_spec, round_rng
from rlhf_platform.rounds.state import advance, beat
from rlhf_platform.rounds.versions import artifact_path, feature_cache


def select_step(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    groups = round_groups(rnd)
    b, k = len(groups), campaign.responses_per_prompt
    flat = [r for g in groups for r in g]
    featurizer = learner.featurizer(policy_spec(campaign), feature_cache())
    features = response_features(featurizer, flat).reshape(b, k, -1)
    beat(rnd, token)
    trainer = learner.load_reward_trainer(artifact_path(rnd.reward_version))
    selection = core_rounds.choose_pairs(
        trainer,
        features,
        campaign.acquisition_rule,
        seed=campaign.seed,
        round_index=rnd.index,
        valid=distinct_responses([[r.text for r in g] for g in groups]),  # never ask A vs A
    )
    mixed_rng = random.Random(round_rng(campaign, rnd, seeds.MIXED))  # noqa: S311 (seeded, reproducible sampling; no secret)
    comparisons = []
    for i, group in enumerate(groups):
        judge = campaign.feedback_mode == FeedbackMode.JUDGE or (
            campaign.feedback_mode == FeedbackMode.MIXED
            and mixed_rng.random() < campaign.mixed_fraction
        )
        humans = (
            0 if campaign.feedback_mode == FeedbackMode.JUDGE else campaign.labels_per_comparison
        )
        score = float(selection.score[i])
        comparisons.append(
            Comparison(
                campaign=campaign,
                round=rnd,
                prompt=group[0].prompt,
                response_a=group[int(selection.a[i])],
                response_b=group[int(selection.b[i])],
                acquisition_rule=campaign.acquisition_rule,
                acquisition_score=score,
                p_mean=float(selection.p_mean[i]),
                p_var=float(selection.p_var[i]),
                policy_version=rnd.policy_version,
                reward_version=rnd.reward_version,
                priority=score,
                labels_required=humans,
                judge_requested=judge,
            )
        )
    with transaction.atomic():
        Comparison.objects.filter(round=rnd).delete()  # an earlier, crashed attempt
        Comparison.objects.bulk_create(comparisons)
        Round.objects.filter(pk=rnd.pk).update(
            deadline=timezone.now() + dt.timedelta(seconds=campaign.round_deadline_seconds)
        )
        state = advance(rnd, token, RoundState.LABELING)
        if any(c.judge_requested for c in comparisons):
            dispatch.judge(rnd.pk)
    return state
