"""Generate: the round's policy samples K responses for each of B training prompts.

Also the helpers later steps read the round's responses with: ``round_groups`` (``[B][K]``,
in generation order) and ``response_features`` (the cached backbone embeddings).
"""

from __future__ import annotations

import torch
from django.db import transaction

from ml_worker.core import learner, seeds
from ml_worker.core import rounds as core_rounds
from ml_worker.core.features import Featurizer
from rlhf_platform import limits
from rlhf_platform.campaigns.models import Campaign, Prompt, Split
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Response, Round, RoundState
from rlhf_platform.rounds.opening import policy_spec, round_rng
from rlhf_platform.rounds.state import advance, beat
from rlhf_platform.rounds.versions import artifact_path


def _sample_prompts(campaign: Campaign, rnd: Round) -> list[Prompt]:
    prompts = list(campaign.prompts.filter(split=Split.TRAIN).order_by("id"))
    positions = core_rounds.round_prompts(
        campaign.seed, rnd.index, len(prompts), campaign.prompts_per_round
    )
    return [prompts[i] for i in positions]


def generate_step(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    prompts = _sample_prompts(campaign, rnd)
    policy = learner.load_policy(policy_spec(campaign), artifact_path(rnd.policy_version))
    beat(rnd, token)
    samples = policy.sample(
        [p.text for p in prompts],
        campaign.responses_per_prompt,
        seed=round_rng(campaign, rnd, seeds.SAMPLES),
    )
    counts = list(policy.last_token_counts) or [0] * sum(len(s) for s in samples)
    beat(rnd, token)
    rows = []
    flat = iter(counts)
    for prompt, texts in zip(prompts, samples, strict=True):
        for text in texts:
            rows.append(
                Response(
                    prompt=prompt,
                    round=rnd,
                    policy_version=rnd.policy_version,
                    # Untrusted model output: NULs and lone surrogates replaced, cut to
                    # RESPONSE_MAX_CHARS (the round still has K responses per prompt).
                    text=limits.model_text(text),
                    token_count=next(flat, 0),
                )
            )
    with transaction.atomic():
        Response.objects.filter(round=rnd).delete()  # an earlier, crashed attempt
        Response.objects.bulk_create(rows)
        state = advance(rnd, token, RoundState.SELECTING)
        dispatch.step(rnd.pk)
    return state


def round_groups(rnd: Round) -> list[list[Response]]:
    """The round's responses, ``[B][K]``, in the order they were generated."""
    groups: list[list[Response]] = []
    k = rnd.campaign.responses_per_prompt
    responses = list(Response.objects.filter(round=rnd).select_related("prompt").order_by("id"))
    for i in range(0, len(responses), k):
        groups.append(responses[i : i + k])
    return groups


def response_features(featurizer: Featurizer, responses: list[Response]) -> torch.Tensor:
    return featurizer.embed([r.prompt.text for r in responses], [r.text for r in responses])
