"""Learn: the reward-model and policy steps that follow a round's labels.

Who refits or steps when, and the steps themselves, are the ML core's
(``ml_worker.core.rounds``, which the benchmark's simulation calls too): an incremental step
every round (``online_step``: online, infomax, double Thompson sampling), or a refit from the
initial weights on every label so far (``refit``: periodic every tau rounds, offline at the
last). This module reads the labels and the round's responses from the database and hands
them over as features and texts (``TextDraws``). The new versions are written, registered
PENDING and made READY in the transaction that advances the round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from django.db import transaction
from django.db.models import QuerySet

from ml_worker.core import learner
from ml_worker.core import rounds as core_rounds
from ml_worker.core.choice import Choice
from ml_worker.core.enn import ENNTrainer
from ml_worker.core.features import Featurizer
from rlhf_platform.campaigns.models import Campaign, Split
from rlhf_platform.labeling.models import Label
from rlhf_platform.raters.selectors import left_out_q
from rlhf_platform.raters.services import label_weights
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.generate import response_features, round_groups
from rlhf_platform.rounds.models import (
    ModelKind,
    ModelVersion,
    Response,
    Round,
    RoundState,
    VersionState,
)
from rlhf_platform.rounds.opening import is_last_round, policy_spec
from rlhf_platform.rounds.state import advance, beat
from rlhf_platform.rounds.versions import (
    artifact_path,
    feature_cache,
    initial_version,
    pending_version,
    write_version_files,
)


def _training_labels(labels: Iterable[Label]) -> tuple[list[Label], torch.Tensor]:
    kept = [lab for lab in labels if Choice(lab.choice).target is not None]
    return kept, torch.tensor([Choice(lab.choice).target for lab in kept], dtype=torch.float32)


def _learning_labels(
    featurizer: Featurizer, trainer: ENNTrainer, campaign: Campaign, labels: Iterable[Label]
) -> tuple[list[Label], core_rounds.Labels]:
    """Of `labels`, those the reward model learns from and their features; weighted by each
    rater's reliability when ``reward_config["rater_weighting"]`` is "weighted" (issue 20)."""
    kept, targets = _training_labels(labels)
    fa = response_features(featurizer, [lab.comparison.response_a for lab in kept])
    fb = response_features(featurizer, [lab.comparison.response_b for lab in kept])
    weights = None
    if trainer.config.rater_weighting == "weighted":
        weights = torch.tensor(
            label_weights(campaign_id=campaign.pk, labels=kept), dtype=torch.float32
        )
    return kept, core_rounds.Labels(fa, fb, targets, weights)


def _labeled_pairs(groups: list[list[Response]], labels: list[Label]) -> torch.Tensor:
    """``long[N, 3]``: per prompt of the round whose pair has a training label, its row among
    the round's groups and the columns of its pair (a, b), in row order."""
    position = {r.pk: (i, j) for i, g in enumerate(groups) for j, r in enumerate(g)}
    pairs = {}
    for lab in labels:
        row, a = position[lab.comparison.response_a_id]
        pairs[row] = (row, a, position[lab.comparison.response_b_id][1])
    return torch.tensor([pairs[row] for row in sorted(pairs)], dtype=torch.long).reshape(-1, 3)


def _labels_q(**filters: Any) -> QuerySet[Label]:
    return (
        Label.objects.filter(**filters, flagged_at__isnull=True)  # flagged: left out
        .exclude(left_out_q())  # excluded raters and gold pairs: left out (issue 20)
        .select_related("comparison__response_a__prompt", "comparison__response_b__prompt")
        .order_by("id")
    )


def learn_step(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    spec = policy_spec(campaign)
    algorithm = campaign.algorithm
    schedule = core_rounds.schedule_of(algorithm)
    refit = core_rounds.refits(
        schedule,
        rnd.index,
        last=is_last_round(campaign, rnd),
        periodic_tau=campaign.periodic_tau,
    )
    incremental = schedule == core_rounds.ONLINE
    reward_v = campaign.active_reward_version
    policy_v = campaign.active_policy_version
    new_versions: dict[str, tuple[Callable[[Path], None], dict[str, float]]] = {}

    if incremental or refit:
        featurizer = learner.featurizer(spec, feature_cache())
        if incremental:
            trainer = learner.load_reward_trainer(artifact_path(reward_v))
            labels, learning = _learning_labels(
                featurizer, trainer, campaign, _labels_q(comparison__round=rnd)
            )
            policy = learner.load_policy(spec, artifact_path(policy_v))
            groups = round_groups(rnd)
            draws = core_rounds.TextDraws(
                policy,
                featurizer,
                draw=([g[0].prompt.text for g in groups], [[r.text for r in g] for g in groups]),
            )
            r_metrics, p_metrics = core_rounds.online_step(
                trainer,
                draws,
                learning,
                draws.features(),
                _labeled_pairs(groups, labels),
                nudge=spec.nudge,
            )
        else:
            trainer = learner.load_reward_trainer(
                artifact_path(initial_version(campaign, ModelKind.REWARD))
            )
            _, learning = _learning_labels(
                featurizer, trainer, campaign, _labels_q(campaign=campaign)
            )
            policy = learner.load_policy(
                spec, artifact_path(initial_version(campaign, ModelKind.POLICY))
            )
            prompts = campaign.prompts.filter(split=Split.TRAIN).order_by("id")
            texts = list(prompts.values_list("text", flat=True))
            r_metrics, p_metrics = core_rounds.refit(
                trainer,
                core_rounds.TextDraws(policy, featurizer, texts),
                learning,
                seed=campaign.seed,
                round_index=rnd.index,
                n_prompts=len(texts),
                batch=campaign.prompts_per_round,
                k=campaign.responses_per_prompt,
                nudge=spec.nudge,
                policy_steps=spec.policy_steps,
                on_step=lambda: beat(rnd, token),
            )
        beat(rnd, token)
        new_versions[ModelKind.REWARD] = (trainer.save, _finite(r_metrics))
        new_versions[ModelKind.POLICY] = (policy.save, _finite(p_metrics))

    registered: dict[str, ModelVersion] = {}
    for kind, (write, metrics) in new_versions.items():
        parent = reward_v if kind == ModelKind.REWARD else policy_v
        rel = write_version_files(campaign, kind, f"round-{rnd.index:05d}", write)
        registered[kind] = pending_version(campaign, kind, rel, rnd, parent, metrics)
    beat(rnd, token)
    with transaction.atomic():
        for version in registered.values():
            ModelVersion.objects.filter(pk=version.pk).update(state=VersionState.READY)
        if registered:
            Campaign.objects.filter(pk=campaign.pk).update(
                active_policy_version=registered[ModelKind.POLICY],
                active_reward_version=registered[ModelKind.REWARD],
            )
        state = advance(rnd, token, RoundState.EVALUATING)
        dispatch.step(rnd.pk)
    return state


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics a version keeps: finite numbers (JSON has no NaN or infinity)."""
    return {key: float(v) for key, v in metrics.items() if math.isfinite(v)}
