"""Online rounds: generate, select, label (human, judge or both), learn, evaluate.

Each step is an idempotent service taking a round ID: it claims the round's current state
(see ``state.py``), does its work, writes its results in one transaction with the
conditional UPDATE that advances the round, and dispatches the next step on commit. A step
re-run after a crash starts over from what the database holds: responses and comparisons
of an unfinished step are replaced, a model version already registered for the round is
reused, and artifact folders are written under a temporary name and renamed when complete.

The four algorithms (DESIGN.md section 2) follow the schedule of `ml_worker.core.rounds`,
which the benchmark's simulation shares:
- offline: every round samples from the initial policy; nothing is learned until the last
  round, which refits the reward model on all labels and then optimizes the policy
  against that frozen reward model (one step per round so far);
- periodic: every ``periodic_tau`` rounds (and at the last), refit the reward model and the
  policy from their initial weights on everything gathered so far;
- online and infomax: one incremental reward-model step and one policy step every round
  (they differ only in the acquisition rule the campaign uses, uniform, infomax or double
  Thompson sampling).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ml_worker.core import learner, seeds
from ml_worker.core import rounds as core_rounds
from ml_worker.core.acquisition import distinct_responses
from ml_worker.core.choice import Choice
from ml_worker.core.enn import ENNTrainer
from ml_worker.core.evaluation import NoValidJudgmentsError, win_rate
from ml_worker.core.features import Featurizer
from ml_worker.core.judges.base import JudgeAuthError, JudgeConfigError, JudgeQuery, build_judge
from rlhf_platform import limits
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.egress import judge_egress_policy
from rlhf_platform.campaigns.models import (
    Algorithm,
    Campaign,
    CampaignState,
    Evaluation,
    FeedbackMode,
    ModelKind,
    ModelVersion,
    Prompt,
    Response,
    Round,
    RoundState,
    Split,
    VersionState,
)
from rlhf_platform.errors import BudgetExhausted
from rlhf_platform.labeling.models import (
    Comparison,
    JudgeCall,
    Label,
    LabelSource,
)
from rlhf_platform.labeling.services import (
    comparison_hand_to_humans,
    label_record,
    leases_expire_with_comparisons,
)
from rlhf_platform.raters.selectors import left_out_q
from rlhf_platform.raters.services import label_weights, refit_soon
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.state import (
    new_token,
    round_advance,
    round_claim,
    round_fail,
    round_heartbeat,
    round_release,
)
from rlhf_platform.rounds.state import round_retry as round_retry  # re-exported

log = logging.getLogger(__name__)

#: Errors worth a retry of the task (the step is released, not failed).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


class ClaimLost(Exception):
    """Another worker took over this round's step (ours was presumed dead)."""


# --------------------------------------------------------------------------------------------
# Artifacts and versions
# --------------------------------------------------------------------------------------------


def _artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def artifact_path(version: ModelVersion) -> Path:
    return _artifact_root() / version.artifact_path


def _feature_cache() -> Path:
    return _artifact_root() / "features"


def _write_version_files(
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
    base = _artifact_root() / "campaigns" / str(campaign.pk) / kind
    base.mkdir(parents=True, exist_ok=True)
    registered = set(
        ModelVersion.objects.filter(campaign=campaign, kind=kind).values_list(
            "artifact_path", flat=True
        )
    )
    for stale in base.glob(f"{name}-*") if clean_stale else ():
        if str(stale.relative_to(_artifact_root())) not in registered:
            shutil.rmtree(stale, ignore_errors=True)
    token = new_token()
    tmp = base / f".tmp-{name}-{token}"
    final = base / f"{name}-{token}"
    try:
        write(tmp)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final.relative_to(_artifact_root()))


def _register(
    campaign: Campaign,
    kind: str,
    rel_path: str,
    *,
    rnd: Round | None,
    parent: ModelVersion | None,
    metrics: dict[str, Any],
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


def _initial_version(campaign: Campaign, kind: str) -> ModelVersion | None:
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
    policy_v = _initial_version(campaign, ModelKind.POLICY)
    reward_v = _initial_version(campaign, ModelKind.REWARD)
    if policy_v and reward_v:
        return policy_v, reward_v
    spec = learner.PolicySpec.from_config(campaign.policy_config)
    written: dict[str, tuple[str, dict[str, Any]]] = {}
    if policy_v is None:
        policy = learner.new_policy(spec)
        written[ModelKind.POLICY] = (
            _write_version_files(
                campaign, ModelKind.POLICY, "initial", policy.save, clean_stale=False
            ),
            {},
        )
        del policy
    if reward_v is None:
        dim = learner.feature_dim(spec)
        trainer = learner.new_reward_trainer(campaign.reward_config, dim, campaign.seed)
        written[ModelKind.REWARD] = (
            _write_version_files(
                campaign, ModelKind.REWARD, "initial", trainer.save, clean_stale=False
            ),
            {"parameters": trainer.model.parameter_count()},
        )
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        versions = {}
        for kind in (ModelKind.POLICY, ModelKind.REWARD):
            existing = _initial_version(campaign, kind)
            rel, metrics = written.get(kind, (None, {}))
            if existing is not None:
                if rel is not None:  # another worker won the race: drop our copy
                    shutil.rmtree(_artifact_root() / rel, ignore_errors=True)
                versions[kind] = existing
            else:
                versions[kind] = _register(
                    campaign, kind, rel, rnd=None, parent=None, metrics=metrics
                )
        policy_v, reward_v = versions[ModelKind.POLICY], versions[ModelKind.REWARD]
        Campaign.objects.filter(pk=campaign.pk).update(
            active_policy_version=policy_v, active_reward_version=reward_v
        )
        return policy_v, reward_v


# --------------------------------------------------------------------------------------------
# Opening rounds
# --------------------------------------------------------------------------------------------


def _campaign_done(campaign: Campaign, rounds_done: int) -> str | None:
    if campaign.max_rounds is not None and rounds_done >= campaign.max_rounds:
        return f"all {campaign.max_rounds} rounds done"
    status = budget_status(campaign_id=campaign.pk)
    if status.exhausted:
        return f"budget spent ({status.reason})"
    return None


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
    if _campaign_done(campaign, done):
        Campaign.objects.filter(pk=campaign.pk, state=CampaignState.RUNNING).update(
            state=CampaignState.FINISHED
        )
        return None
    policy_v, reward_v = ensure_initial_versions(campaign)
    campaign.refresh_from_db()
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


# --------------------------------------------------------------------------------------------
# The step dispatcher
# --------------------------------------------------------------------------------------------


def round_step(*, round_id: int) -> str | None:
    """Do the work of the round's current state, if nobody else is. Returns the new state.

    Transient database errors propagate (the task retries them); any other error fails the
    round with its reason, so a round never stays in a working state with nobody on it.
    """
    rnd = Round.objects.select_related("campaign").filter(pk=round_id).first()
    if rnd is None or rnd.state in (RoundState.DONE, RoundState.FAILED):
        return None
    if rnd.state == RoundState.LABELING:
        return round_try_close(round_id=round_id)
    steps = {
        RoundState.GENERATING: _generate,
        RoundState.SELECTING: _select,
        RoundState.LEARNING: _learn,
        RoundState.EVALUATING: _evaluate,
    }
    token = new_token()
    if not round_claim(round_id=round_id, state=rnd.state, token=token):
        return None
    try:
        return steps[rnd.state](rnd, token)
    except ClaimLost:
        log.warning("round %s: claim lost during %s; another worker continues", round_id, rnd.state)
        return None
    except TRANSIENT_ERRORS:
        round_release(round_id=round_id, token=token)
        raise
    except Exception as exc:
        log.exception("round %s failed in %s", round_id, rnd.state)
        round_fail(round_id=round_id, reason=f"{type(exc).__name__}: {exc}", token=token)
        return RoundState.FAILED


def _beat(rnd: Round, token: str) -> None:
    if not round_heartbeat(round_id=rnd.pk, token=token):
        raise ClaimLost()


def _advance(rnd: Round, token: str, to_state: str) -> str:
    if not round_advance(round_id=rnd.pk, token=token, from_state=rnd.state, to_state=to_state):
        raise ClaimLost()
    return to_state


def _round_rng(campaign: Campaign, rnd: Round, salt: int) -> int:
    return seeds.round_seed(campaign.seed, rnd.index, salt)


def _spec(campaign: Campaign) -> learner.PolicySpec:
    return learner.PolicySpec.from_config(campaign.policy_config)


# --------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------


def _sample_prompts(campaign: Campaign, rnd: Round) -> list[Prompt]:
    prompts = list(campaign.prompts.filter(split=Split.TRAIN).order_by("id"))
    positions = core_rounds.round_prompts(
        campaign.seed, rnd.index, len(prompts), campaign.prompts_per_round
    )
    return [prompts[i] for i in positions]


def _generate(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    prompts = _sample_prompts(campaign, rnd)
    policy = learner.load_policy(_spec(campaign), artifact_path(rnd.policy_version))
    _beat(rnd, token)
    samples = policy.sample(
        [p.text for p in prompts],
        campaign.responses_per_prompt,
        seed=_round_rng(campaign, rnd, seeds.SAMPLES),
    )
    counts = list(policy.last_token_counts) or [0] * sum(len(s) for s in samples)
    _beat(rnd, token)
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
        state = _advance(rnd, token, RoundState.SELECTING)
        dispatch.step(rnd.pk)
    return state


def _round_groups(rnd: Round) -> list[list[Response]]:
    """The round's responses, ``[B][K]``, in the order they were generated."""
    groups: list[list[Response]] = []
    k = rnd.campaign.responses_per_prompt
    responses = list(Response.objects.filter(round=rnd).select_related("prompt").order_by("id"))
    for i in range(0, len(responses), k):
        groups.append(responses[i : i + k])
    return groups


def _features(featurizer: Any, responses: list[Response]) -> torch.Tensor:
    return featurizer.embed([r.prompt.text for r in responses], [r.text for r in responses])


# --------------------------------------------------------------------------------------------
# Select
# --------------------------------------------------------------------------------------------


def _select(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    groups = _round_groups(rnd)
    b, k = len(groups), campaign.responses_per_prompt
    flat = [r for g in groups for r in g]
    featurizer = learner.featurizer(_spec(campaign), _feature_cache())
    features = _features(featurizer, flat).reshape(b, k, -1)
    _beat(rnd, token)
    trainer = learner.load_reward_trainer(artifact_path(rnd.reward_version))
    selection = core_rounds.choose_pairs(
        trainer,
        features,
        campaign.acquisition_rule,
        seed=campaign.seed,
        round_index=rnd.index,
        valid=distinct_responses([[r.text for r in g] for g in groups]),  # never ask A vs A
    )
    mixed_rng = random.Random(_round_rng(campaign, rnd, seeds.MIXED))  # noqa: S311 (seeded, reproducible sampling; no secret)
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
            deadline=timezone.now() + timezone.timedelta(seconds=campaign.round_deadline_seconds)
        )
        state = _advance(rnd, token, RoundState.LABELING)
        if any(c.judge_requested for c in comparisons):
            dispatch.judge(rnd.pk)
    return state


# --------------------------------------------------------------------------------------------
# Label: the judge, and closing the round
# --------------------------------------------------------------------------------------------


def _needs_judge(rnd_id: int):
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
    rng = random.Random(_round_rng(campaign, rnd, seeds.JUDGE_SWAPS))  # noqa: S311 (seeded, reproducible sampling; no secret)
    budget_spent = False
    pending = list(_needs_judge(round_id))
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
        for c in _needs_judge(round_id):
            attempts = c.judge_calls.count()
            if attempts >= settings.JUDGE_MAX_ATTEMPTS:
                comparison_hand_to_humans(comparison_id=c.pk)
            else:
                retry += 1
    round_try_close(round_id=round_id)
    return retry


@transaction.atomic
def _record_judgment(comparison: Comparison, swapped: bool, result: Any, judge_name: str) -> None:
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
        order_disagreement=getattr(result, "order_disagreement", None),
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        attempt=attempt,
    )
    if not result.valid:
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
        state = _advance(rnd, token, RoundState.LEARNING)
        dispatch.step(rnd.pk)
    return state


# --------------------------------------------------------------------------------------------
# Learn
# --------------------------------------------------------------------------------------------


def _is_last_round(campaign: Campaign, rnd: Round) -> bool:
    return _campaign_done(campaign, rnd.index + 1) is not None


def _training_labels(labels: Iterable[Label]) -> tuple[list[Label], torch.Tensor]:
    kept = [lab for lab in labels if Choice(lab.choice).target is not None]
    return kept, torch.tensor([Choice(lab.choice).target for lab in kept], dtype=torch.float32)


def _learning_labels(
    featurizer: Featurizer, trainer: ENNTrainer, campaign: Campaign, labels: Iterable[Label]
) -> tuple[list[Label], core_rounds.Labels]:
    """Of `labels`, those the reward model learns from and their features; weighted by each
    rater's reliability when ``reward_config["rater_weighting"]`` is "weighted" (issue 20)."""
    kept, targets = _training_labels(labels)
    fa = _features(featurizer, [lab.comparison.response_a for lab in kept])
    fb = _features(featurizer, [lab.comparison.response_b for lab in kept])
    weights = None
    if trainer.config.rater_weighting == "weighted":
        weights = torch.tensor(
            label_weights(campaign_id=campaign.pk, labels=kept), dtype=torch.float32
        )
    return kept, core_rounds.Labels(fa, fb, targets, weights)


def _labels_q(**filters: Any):
    return (
        Label.objects.filter(**filters, flagged_at__isnull=True)  # flagged: left out
        .exclude(left_out_q())  # excluded raters and gold pairs: left out (issue 20)
        .select_related("comparison__response_a__prompt", "comparison__response_b__prompt")
        .order_by("id")
    )


def _learn(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    spec = _spec(campaign)
    algorithm = campaign.algorithm
    schedule = core_rounds.schedule_of(algorithm)
    refit = core_rounds.refits(
        schedule,
        rnd.index,
        last=_is_last_round(campaign, rnd),
        periodic_tau=campaign.periodic_tau,
    )
    incremental = schedule == core_rounds.ONLINE
    reward_v = campaign.active_reward_version
    policy_v = campaign.active_policy_version
    new_versions: dict[str, tuple[Callable[[Path], None], dict[str, Any]]] = {}

    if incremental or refit:
        featurizer = learner.featurizer(spec, _feature_cache())
        if incremental:
            trainer = learner.load_reward_trainer(artifact_path(reward_v))
            labels, learning = _learning_labels(
                featurizer, trainer, campaign, _labels_q(comparison__round=rnd)
            )
            policy = learner.load_policy(spec, artifact_path(policy_v))
            groups = _round_groups(rnd)
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
                artifact_path(_initial_version(campaign, ModelKind.REWARD))
            )
            _, learning = _learning_labels(
                featurizer, trainer, campaign, _labels_q(campaign=campaign)
            )
            policy = learner.load_policy(
                spec, artifact_path(_initial_version(campaign, ModelKind.POLICY))
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
                on_step=lambda: _beat(rnd, token),
            )
        _beat(rnd, token)
        new_versions[ModelKind.REWARD] = (trainer.save, _finite(r_metrics))
        new_versions[ModelKind.POLICY] = (policy.save, _finite(p_metrics))

    registered: dict[str, ModelVersion] = {}
    for kind, (write, metrics) in new_versions.items():
        parent = reward_v if kind == ModelKind.REWARD else policy_v
        rel = _write_version_files(campaign, kind, f"round-{rnd.index:05d}", write)
        registered[kind] = _pending_version(campaign, kind, rel, rnd, parent, metrics)
    _beat(rnd, token)
    with transaction.atomic():
        for version in registered.values():
            ModelVersion.objects.filter(pk=version.pk).update(state=VersionState.READY)
        if registered:
            Campaign.objects.filter(pk=campaign.pk).update(
                active_policy_version=registered[ModelKind.POLICY],
                active_reward_version=registered[ModelKind.REWARD],
            )
        state = _advance(rnd, token, RoundState.EVALUATING)
        dispatch.step(rnd.pk)
    return state


def _pending_version(
    campaign: Campaign, kind: str, rel: str, rnd: Round, parent: ModelVersion | None, metrics: dict
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
        old = _artifact_root() / version.artifact_path
        ModelVersion.objects.filter(pk=version.pk).update(artifact_path=rel, metrics=metrics)
        shutil.rmtree(old, ignore_errors=True)
    return version


def _labeled_pairs(groups: list[list[Response]], labels: list[Label]) -> torch.Tensor:
    """``long[N, 3]``: per prompt of the round whose pair has a training label, its row among
    the round's groups and the columns of its pair (a, b), in row order."""
    position = {r.pk: (i, j) for i, g in enumerate(groups) for j, r in enumerate(g)}
    pairs = {}
    for lab in labels:
        row, a = position[lab.comparison.response_a_id]
        pairs[row] = (row, a, position[lab.comparison.response_b_id][1])
    return torch.tensor([pairs[row] for row in sorted(pairs)], dtype=torch.long).reshape(-1, 3)


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


# --------------------------------------------------------------------------------------------
# Evaluate
# --------------------------------------------------------------------------------------------


def _evaluate(rnd: Round, token: str) -> str:
    campaign = rnd.campaign
    last = _is_last_round(campaign, rnd)
    due = campaign.eval_every and ((rnd.index + 1) % campaign.eval_every == 0 or last)
    spec = _spec(campaign)
    prompts = list(campaign.prompts.filter(split=Split.EVAL).order_by("id")[: spec.eval_prompts])
    if due and prompts:
        active = Campaign.objects.get(pk=campaign.pk).active_policy_version
        initial = _initial_version(campaign, ModelKind.POLICY)
        texts = [p.text for p in prompts]
        new = learner.load_policy(spec, artifact_path(active)).greedy(texts)
        _beat(rnd, token)
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
                seed=_round_rng(campaign, rnd, seeds.EVALUATE),
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
        state = _advance(rnd, token, RoundState.DONE)
        if _campaign_done(campaign, rnd.index + 1):
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


# --------------------------------------------------------------------------------------------
# Sweeping: overdue rounds, lost messages, dead workers
# --------------------------------------------------------------------------------------------


def rounds_sweep(*, idle_seconds: int | None = None) -> dict[str, int]:
    """Periodic: close overdue labeling rounds, re-dispatch rounds whose step nobody holds
    (a lost message) or whose claim went stale (a dead worker), re-send the judge of labeling
    rounds it left idle with comparisons still waiting for it (a lost message), open rounds
    for running campaigns that have none."""
    idle = idle_seconds if idle_seconds is not None else settings.ROUND_CLAIM_STALE_SECONDS
    cutoff = timezone.now() - timezone.timedelta(seconds=idle)
    counts = {"closed": 0, "redispatched": 0, "judge_redispatched": 0, "opened": 0}
    for rnd in Round.objects.filter(state=RoundState.LABELING):
        if round_try_close(round_id=rnd.pk) == RoundState.LEARNING:
            counts["closed"] += 1
        elif _judge_idle_since(rnd) < cutoff and _needs_judge(rnd.pk).exists():
            # The judge's message got lost (the broker restarted empty, or the worker died
            # between committing the round's move to labeling and sending it): without this
            # the round would wait for its deadline (an hour by default) with nobody on it.
            with transaction.atomic():
                dispatch.judge(rnd.pk)
            counts["judge_redispatched"] += 1
    working = [
        RoundState.GENERATING,
        RoundState.SELECTING,
        RoundState.LEARNING,
        RoundState.EVALUATING,
    ]
    for rnd in Round.objects.filter(state__in=working):
        # An unclaimed step whose message got lost, or a claim whose worker died.
        since = rnd.claimed_at if rnd.claim_token else _last_transition_time(rnd)
        if since is None or since < cutoff:
            with transaction.atomic():
                dispatch.step(rnd.pk)
            counts["redispatched"] += 1
    for campaign in Campaign.objects.filter(state=CampaignState.RUNNING).exclude(policy_config={}):
        if not campaign.rounds.exclude(state=RoundState.DONE).exists():
            if campaign_open_round(campaign_id=campaign.pk) is not None:
                counts["opened"] += 1
    return counts


def rounds_resume_interrupted() -> list[Round]:
    """Take back every round step left claimed by a worker that is gone, and send it again.

    For a start when **no worker of this database is running**: the embedded demo calls it
    (``manage.py resume_rounds`` in ``scripts/demo.sh``) before it starts its own worker,
    so a round interrupted by Ctrl-C resumes at once instead of after
    ``ROUND_CLAIM_STALE_SECONDS`` (10 minutes by default). With workers running elsewhere
    it would take their claims from under them (their advance would then be refused, and
    the step done twice): scale-out deployments rely on the stale-claim sweep instead.
    A step's work is redone from its start; every step is idempotent (responses of a
    crashed attempt are replaced, versions registered once).
    """
    working = [
        RoundState.GENERATING,
        RoundState.SELECTING,
        RoundState.LEARNING,
        RoundState.EVALUATING,
    ]
    resumed = []
    for rnd in Round.objects.filter(state__in=working).order_by("id"):
        with transaction.atomic():
            Round.objects.filter(pk=rnd.pk).update(claim_token="", claimed_at=None)
            dispatch.step(rnd.pk)
        resumed.append(rnd)
    for rnd in Round.objects.filter(state=RoundState.LABELING).order_by("id"):
        if _needs_judge(rnd.pk).exists():
            with transaction.atomic():
                dispatch.judge(rnd.pk)
            resumed.append(rnd)
    return resumed


def _judge_idle_since(rnd: Round):
    """When the judge last worked on the round (or, if never, when it started labeling)."""
    last_call = (
        JudgeCall.objects.filter(comparison__round=rnd)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    moved = _last_transition_time(rnd)
    times = [t for t in (last_call, moved) if t is not None]
    return max(times) if times else timezone.now()


def _last_transition_time(rnd: Round):
    if not rnd.transitions:
        return None
    return parse_datetime(rnd.transitions[-1][1])


# --------------------------------------------------------------------------------------------
# Foreground runs (management command, notebooks, tests)
# --------------------------------------------------------------------------------------------


def campaign_run_inline(
    *,
    campaign_id: int,
    rounds: int,
    poll_seconds: float = 2.0,
    on_round_done: Callable[[Round], None] | None = None,
) -> list[Round]:
    """Run up to ``rounds`` rounds in this process, without a worker.

    Judge campaigns run straight through; human campaigns wait (polling) in each labeling
    state until annotators finish the round or its deadline passes.
    """
    finished: list[Round] = []
    with dispatch.inline() as pop:
        for _ in range(rounds):
            rnd = campaign_open_round(campaign_id=campaign_id)
            if rnd is None:
                break
            while True:
                item = pop()
                if item is None:
                    rnd.refresh_from_db()
                    if rnd.state in (RoundState.DONE, RoundState.FAILED):
                        break
                    if rnd.state == RoundState.LABELING:
                        round_judge(round_id=rnd.pk)
                        if round_try_close(round_id=rnd.pk) == RoundState.LABELING:
                            time.sleep(poll_seconds)
                        continue
                    round_step(round_id=rnd.pk)  # e.g. a released claim
                    continue
                kind, object_id = item
                if kind == "judge":
                    round_judge(round_id=object_id)
                elif kind == "open":
                    campaign_open_round(campaign_id=object_id)
                else:
                    round_step(round_id=object_id)
            finished.append(rnd)
            if on_round_done is not None:
                on_round_done(rnd)
            if rnd.state == RoundState.FAILED:
                break
    return finished


# --------------------------------------------------------------------------------------------
# Judge trial (the New campaign page's "try it on one pair")
# --------------------------------------------------------------------------------------------


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
    return fields["state"]
