"""Learn: the reward-model and policy steps that follow a round's labels.

Who refits or steps when comes from the schedule in ``ml_worker.core.rounds``: an incremental
step every round (online, infomax), or a refit from the initial weights on every label so far
(periodic every tau rounds, offline at the last). The new versions are written, registered
PENDING and made READY in the transaction that advances the round.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from django.db import transaction
from django.db.models import Count, Q

from ml_worker.core import learner
from ml_worker.core import rounds as round_schedule
from ml_worker.core.choice import TRAINED, Choice
from ml_worker.core.enn import ENNTrainer
from ml_worker.core.update import reinforce_signals, unlabeled_signals
from rlhf_platform.campaigns.models import Campaign, Split
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.raters.selectors import left_out_q
from rlhf_platform.raters.services import label_weights
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.generate import response_features, round_groups
from rlhf_platform.rounds.models import ModelKind, ModelVersion, Round, RoundState, VersionState
from rlhf_platform.rounds.opening import is_last_round, policy_spec
from rlhf_platform.rounds.state import advance, beat
from rlhf_platform.rounds.versions import (
    artifact_path,
    feature_cache,
    initial_version,
    pending_version,
    write_version_files,
)


def _training_labels(labels) -> tuple[list[Label], torch.Tensor]:
    kept = [lab for lab in labels if Choice(lab.choice).target is not None]
    return kept, torch.tensor([Choice(lab.choice).target for lab in kept], dtype=torch.float32)


def _label_features(featurizer: Any, labels: list[Label]) -> tuple[torch.Tensor, torch.Tensor]:
    a = response_features(featurizer, [lab.comparison.response_a for lab in labels])
    b = response_features(featurizer, [lab.comparison.response_b for lab in labels])
    return a, b


def _rater_weights(
    trainer: ENNTrainer, campaign: Campaign, labels: list[Label]
) -> torch.Tensor | None:
    """Each label's rater reliability when ``reward_config["rater_weighting"]`` is
    "weighted" (issue 20), else None (every label counts 1)."""
    if trainer.config.rater_weighting != "weighted":
        return None
    weights = label_weights(campaign_id=campaign.pk, labels=labels)
    return torch.tensor(weights, dtype=torch.float32)


def _labels_q(**filters: Any):
    return (
        Label.objects.filter(**filters, flagged_at__isnull=True)  # flagged: left out
        .exclude(left_out_q())  # excluded raters and gold pairs: left out (issue 20)
        .select_related("comparison__response_a__prompt", "comparison__response_b__prompt")
        .order_by("id")
    )


def _optimize_policy(
    policy: Any,
    trainer: ENNTrainer,
    featurizer: Any,
    campaign: Campaign,
    rnd: Round,
    spec: learner.PolicySpec,
    token: str,
) -> dict[str, float]:
    """Policy optimization against a frozen reward model (offline / periodic refits): as many
    steps as rounds so far, on the prompts and samples `rounds.optimize_batches` draws."""
    prompts = list(
        campaign.prompts.filter(split=Split.TRAIN).order_by("id").values_list("text", flat=True)
    )
    k = campaign.responses_per_prompt
    steps = round_schedule.refit_policy_steps(rnd.index, spec.policy_steps)
    batches = round_schedule.optimize_batches(
        campaign.seed, rnd.index, len(prompts), campaign.prompts_per_round, steps
    )
    metrics: dict[str, float] = {}
    for positions, sample_seed in batches:
        batch = [prompts[i] for i in positions]
        samples = policy.sample(batch, k, seed=sample_seed)
        flat_prompts = [p for p, group in zip(batch, samples, strict=True) for _ in group]
        flat = [t for group in samples for t in group]
        point, _ = learner.group_rewards(
            trainer, featurizer.embed(flat_prompts, flat), len(batch), k
        )
        p_idx, r_idx, signal = unlabeled_signals(point, spec.nudge)
        metrics = policy.update(
            [batch[i] for i in p_idx.tolist()],
            [samples[i][j] for i, j in zip(p_idx.tolist(), r_idx.tolist(), strict=True)],
            signal,
        )
        beat(rnd, token)
    return metrics


def learn_step(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    spec = policy_spec(campaign)
    algorithm = campaign.algorithm
    schedule = round_schedule.schedule_of(algorithm)
    refit = round_schedule.refits(
        schedule,
        rnd.index,
        last=is_last_round(campaign, rnd),
        periodic_tau=campaign.periodic_tau,
    )
    incremental = schedule == round_schedule.ONLINE
    reward_v = campaign.active_reward_version
    policy_v = campaign.active_policy_version
    new_versions: dict[str, tuple[Callable[[Path], None], dict[str, Any]]] = {}

    if incremental or refit:
        featurizer = learner.featurizer(spec, feature_cache())
        if incremental:
            labels, targets = _training_labels(_labels_q(comparison__round=rnd))
            trainer = learner.load_reward_trainer(artifact_path(reward_v))
            r_metrics = {"labels": len(labels)}
            if labels:
                fa, fb = _label_features(featurizer, labels)
                lw = _rater_weights(trainer, campaign, labels)
                r_metrics |= trainer.step(fa, fb, targets, label_weights=lw)
            beat(rnd, token)
            policy = learner.load_policy(spec, artifact_path(policy_v))
            p_metrics = _incremental_policy_step(policy, trainer, featurizer, rnd, spec)
        else:
            labels, targets = _training_labels(_labels_q(campaign=campaign))
            initial_reward = initial_version(campaign, ModelKind.REWARD)
            trainer = learner.load_reward_trainer(artifact_path(initial_reward))
            r_metrics = {"labels": len(labels)}
            if labels:
                fa, fb = _label_features(featurizer, labels)
                lw = _rater_weights(trainer, campaign, labels)
                r_metrics |= trainer.refit(fa, fb, targets, label_weights=lw)
            beat(rnd, token)
            policy = learner.load_policy(
                spec, artifact_path(initial_version(campaign, ModelKind.POLICY))
            )
            p_metrics = _optimize_policy(policy, trainer, featurizer, campaign, rnd, spec, token)
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


def _incremental_policy_step(
    policy: Any, trainer: ENNTrainer, featurizer: Any, rnd: Round, spec: learner.PolicySpec
) -> dict[str, float]:
    """One REINFORCE step on the round's samples: the labeled pair and its reverse plus
    best-vs-worst by the (just updated) reward model, signal p(Y > Y') - 1/2 + nudge."""
    groups = round_groups(rnd)
    b, k = len(groups), rnd.campaign.responses_per_prompt
    flat = [r for g in groups for r in g]
    point, _ = learner.group_rewards(trainer, response_features(featurizer, flat), b, k)
    position = {r.pk: (i, j) for i, g in enumerate(groups) for j, r in enumerate(g)}
    labeled = (
        Comparison.objects.filter(round=rnd)
        .annotate(
            n=Count(
                "labels",
                filter=Q(labels__choice__in=TRAINED) & Q(labels__flagged_at__isnull=True),
            )
        )
        .filter(n__gt=0)
    )
    pairs = {
        position[c.response_a_id][0]: (position[c.response_a_id][1], position[c.response_b_id][1])
        for c in labeled
    }
    if not pairs:
        return {"skipped": 1.0}
    rows = sorted(pairs)
    p_idx, r_idx, signal = reinforce_signals(
        point[rows], torch.tensor([pairs[i] for i in rows]), spec.nudge
    )
    p_rows = [rows[i] for i in p_idx.tolist()]
    return policy.update(
        [groups[i][0].prompt.text for i in p_rows],
        [groups[i][j].text for i, j in zip(p_rows, r_idx.tolist(), strict=True)],
        signal,
    )


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            f = float(value)
        except (TypeError, ValueError):
            continue
        if f == f and abs(f) != float("inf"):
            out[key] = f
    return out
