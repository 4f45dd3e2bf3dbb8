"""Model-version files and their registration.

A version's files are written under a temporary name and renamed into place when complete;
only then is the version registered (READY at once for the initial versions; PENDING for a
round's new versions until the round advances, see ``learn.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction

from ml_worker.core import learner
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.rounds.models import ModelKind, ModelVersion, Round, VersionState
from rlhf_platform.rounds.state import new_token


def artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def require(version: ModelVersion | None) -> ModelVersion:
    """`version`, which a started campaign always has (its initial versions are registered
    before its first round); a clear error if it is missing."""
    if version is None:
        raise ValueError("no model version: the campaign's initial versions are not registered")
    return version


def artifact_path(version: ModelVersion | None) -> Path:
    return artifact_root() / require(version).artifact_path


def feature_cache() -> Path:
    return artifact_root() / "features"


def write_version_files(
    campaign: Campaign,
    kind: str,
    name: str,
    write: Callable[[Path], None],
    *,
    clean_stale: bool = True,
) -> str:
    """Write a version's files aside and rename them into place; returns the relative path.

    Folders of earlier, crashed attempts at the same name (never registered) are removed,
    unless ``clean_stale`` is off: a caller that writes without holding the campaign's lock
    (the initial versions) must not remove a concurrent writer's unregistered folder.
    """
    base = artifact_root() / "campaigns" / str(campaign.pk) / kind
    base.mkdir(parents=True, exist_ok=True)
    registered = set(
        ModelVersion.objects.filter(campaign=campaign, kind=kind).values_list(
            "artifact_path", flat=True
        )
    )
    for stale in base.glob(f"{name}-*") if clean_stale else ():
        if str(stale.relative_to(artifact_root())) not in registered:
            shutil.rmtree(stale, ignore_errors=True)
    token = new_token()
    tmp = base / f".tmp-{name}-{token}"
    final = base / f"{name}-{token}"
    try:
        write(tmp)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final.relative_to(artifact_root()))


def _register(
    campaign: Campaign,
    kind: str,
    rel_path: str,
    *,
    rnd: Round | None,
    parent: ModelVersion | None,
    metrics: dict[str, float],
) -> ModelVersion:
    return ModelVersion.objects.create(
        campaign=campaign,
        kind=kind,
        round=rnd,
        parent=parent,
        artifact_path=rel_path,
        metrics=metrics,
        state=VersionState.READY,
    )


def initial_version(campaign: Campaign, kind: str) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(
            campaign=campaign, kind=kind, round__isnull=True, state=VersionState.READY
        )
        .order_by("id")
        .first()
    )


def ensure_initial_versions(campaign: Campaign) -> tuple[ModelVersion, ModelVersion]:
    """Write and register version 0 of the policy and the reward model (once).

    The model is built and its files written *outside* any transaction: loading a base
    model takes seconds (SmolLM2 from its GGUF: ~18 s the first time), and on the embedded
    SQLite a transaction holding the write lock that long made every login wait behind it.
    Only the registration is a short locked transaction; if another worker registered a
    version meanwhile, ours is discarded and theirs returned.
    """
    policy_v = initial_version(campaign, ModelKind.POLICY)
    reward_v = initial_version(campaign, ModelKind.REWARD)
    if policy_v and reward_v:
        return policy_v, reward_v
    spec = learner.PolicySpec.from_config(campaign.policy_config)
    written: dict[str, tuple[str, dict[str, float]]] = {}
    if policy_v is None:
        policy = learner.new_policy(spec)
        written[ModelKind.POLICY] = (
            write_version_files(
                campaign, ModelKind.POLICY, "initial", policy.save, clean_stale=False
            ),
            {},
        )
        del policy
    if reward_v is None:
        dim = learner.feature_dim(spec)
        trainer = learner.new_reward_trainer(campaign.reward_config, dim, campaign.seed)
        written[ModelKind.REWARD] = (
            write_version_files(
                campaign, ModelKind.REWARD, "initial", trainer.save, clean_stale=False
            ),
            {"parameters": trainer.model.parameter_count()},
        )
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        versions = {}
        for kind in (ModelKind.POLICY, ModelKind.REWARD):
            existing = initial_version(campaign, kind)
            rel, metrics = written.get(kind, (None, {}))
            if existing is not None:
                if rel is not None:  # another worker won the race: drop our copy
                    shutil.rmtree(artifact_root() / rel, ignore_errors=True)
                versions[kind] = existing
            elif rel is None:  # registered when we looked, gone now: never deleted
                raise ValueError(f"the initial {kind} version disappeared while registering")
            else:
                versions[kind] = _register(
                    campaign, kind, rel, rnd=None, parent=None, metrics=metrics
                )
        policy_v, reward_v = versions[ModelKind.POLICY], versions[ModelKind.REWARD]
        Campaign.objects.filter(pk=campaign.pk).update(
            active_policy_version=policy_v, active_reward_version=reward_v
        )
        return policy_v, reward_v


def pending_version(
    campaign: Campaign,
    kind: str,
    rel: str,
    rnd: Round,
    parent: ModelVersion | None,
    metrics: dict[str, float],
) -> ModelVersion:
    """Register the files as a PENDING version of the round; READY comes with the round's
    advance, in one transaction with the switch of the campaign's active versions."""
    version, created = ModelVersion.objects.get_or_create(
        round=rnd,
        kind=kind,
        defaults={
            "campaign": campaign,
            "parent": parent,
            "artifact_path": rel,
            "metrics": metrics,
            "state": VersionState.PENDING,
        },
    )
    if not created and version.artifact_path != rel:
        # A crashed attempt registered other files; point the version at the new ones.
        old = artifact_root() / version.artifact_path
        ModelVersion.objects.filter(pk=version.pk).update(artifact_path=rel, metrics=metrics)
        shutil.rmtree(old, ignore_errors=True)
    return version
