"""Writes about raters: the rater model's refit, exclusions, gold pairs and their rate.

Every researcher action here is written with its audit log entry in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from ml_worker.core.rater_stats import CHOICES
from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import AcquisitionRule, Campaign, Prompt
from rlhf_platform.campaigns.selectors import can_manage
from rlhf_platform.errors import InvalidInput, NotFound, PermissionDenied
from rlhf_platform.insights.models import AuditAction, AuditEntry
from rlhf_platform.labeling.models import Comparison, ComparisonState, Label, LabelSource
from rlhf_platform.raters.models import GoldPair, RaterExclusion, RaterSettings
from rlhf_platform.raters.selectors import gold_answers, gold_rate_forget, rater_key
from rlhf_platform.rounds.models import Response

log = logging.getLogger(__name__)

#: At most one refit per campaign in this many seconds (labels arriving meanwhile are
#: picked up by the refit that is already scheduled).
REFIT_DEBOUNCE_SECONDS = 60


# --------------------------------------------------------------------------------------------
# Refit
# --------------------------------------------------------------------------------------------


def raters_refit(*, campaign_id: int) -> RaterSettings | None:
    """Fit the rater model on the campaign's labels (all raters, excluded ones too, judges
    as raters; flagged labels left out), warm-started from the last fit, and store it."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return None
    labels = list(
        Label.objects.filter(campaign_id=campaign_id, flagged_at__isnull=True)
        .order_by("id")
        .only(
            "comparison_id",
            "source",
            "annotator_id",
            "judge_name",
            "choice",
            "shown_swapped",
            "time_taken_ms",
        )
    )
    row, _ = RaterSettings.objects.get_or_create(campaign=campaign)
    if not labels:
        return row
    from ml_worker.core.raters import fit_raters  # NumPy: workers only, never the web process

    # Keyed as fit_raters takes it (Mapping[Hashable, str]: Mapping's key type is
    # invariant, so a dict[int, str] is not one).
    gold: dict[Hashable, str] = {item: answer for item, answer in gold_answers(campaign_id).items()}
    fit = fit_raters(
        [lab.comparison_id for lab in labels],
        [rater_key(lab) for lab in labels],
        [lab.choice for lab in labels],
        [lab.shown_swapped for lab in labels],
        seconds=[None if lab.time_taken_ms is None else lab.time_taken_ms / 1000 for lab in labels],
        gold=gold,
        previous=row.warm_start or None,
    )
    RaterSettings.objects.filter(pk=row.pk).update(
        estimates={r: e.to_dict() for r, e in fit.estimates.items()},
        warm_start=fit.previous(),
        labels_fitted=len(labels),
        iterations=fit.iterations,
        fitted_at=timezone.now(),
    )
    row.refresh_from_db()
    return row


def refit_soon(campaign_id: int) -> None:
    """Labels arrived: schedule a refit in a minute unless one is already scheduled.

    Costs no database statement (the submit hot path calls it): the debounce is a cache
    key set-if-absent; the task is sent after the caller's transaction commits. Without a
    shared cache (the one-process demo) the debounce is per process.
    """

    def send() -> None:
        if not cache.add(f"raters:refit:{campaign_id}", 1, REFIT_DEBOUNCE_SECONDS):
            return
        from rlhf_platform.celery import app

        try:
            app.send_task("raters.refit", args=[campaign_id], countdown=REFIT_DEBOUNCE_SECONDS)
        except (BrokerError, OSError) as exc:
            # The key stays: during an outage a submit tries the broker at most once a
            # minute per campaign. A lost refit costs nothing lasting: the next labels send
            # another, and weighted training refits before it trains.
            log.warning("broker unavailable, rater refit of %s not sent: %s", campaign_id, exc)

    transaction.on_commit(send)


def label_weights(*, campaign_id: int, labels: Sequence[Label]) -> list[float]:
    """Each label's weight for the reward model: its rater's estimated reliability, after a
    refit on everything the campaign has now (cheap: a warm-started NumPy fit). A rater the
    model has not seen yet counts 1."""
    row = raters_refit(campaign_id=campaign_id)
    estimates = row.estimates if row else {}
    return [float(estimates.get(rater_key(lab), {}).get("reliability", 1.0)) for lab in labels]


# --------------------------------------------------------------------------------------------
# Exclusion
# --------------------------------------------------------------------------------------------


def _check_manager(actor: User, campaign: Campaign) -> None:
    if not can_manage(actor, campaign):
        raise PermissionDenied("Only the campaign's owner or an admin may do this.")


def _parse_rater(campaign: Campaign, rater: str) -> tuple[int | None, str]:
    kind, _, name = str(rater).partition(":")
    if kind == "user" and name.isdigit():
        if Label.objects.filter(campaign=campaign, annotator_id=int(name)).exists():
            return int(name), ""
    elif kind == "judge" and name:
        if Label.objects.filter(
            campaign=campaign, source=LabelSource.JUDGE, judge_name=name
        ).exists():
            return None, name
    else:
        raise InvalidInput("A rater is 'user:<id>' or 'judge:<name>'.", code="invalid_rater")
    raise NotFound("No such rater in this campaign.", code="rater_not_found")


@transaction.atomic
def rater_exclusion_set(
    *, actor: User, campaign: Campaign, rater: str, excluded: bool, reason: str = ""
) -> bool:
    """Exclude a rater (training and exports leave their labels out from now on) or
    include them again. Audited; returns False (and logs nothing) when nothing changes."""
    _check_manager(actor, campaign)
    if len(reason) > 200:
        raise InvalidInput("The reason is at most 200 characters.", code="invalid_reason")
    annotator_id, judge_name = _parse_rater(campaign, rater)
    existing = RaterExclusion.objects.select_for_update().filter(campaign=campaign, rater=rater)
    if excluded == existing.exists():
        return False
    if excluded:
        RaterExclusion.objects.create(
            campaign=campaign,
            rater=rater,
            annotator_id=annotator_id,
            judge_name=judge_name,
            reason=reason,
            excluded_by=actor,
        )
    else:
        existing.delete()
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.EXCLUDE_RATER if excluded else AuditAction.INCLUDE_RATER,
        before={"rater": rater, "excluded": not excluded},
        after={"rater": rater, "excluded": excluded, "reason": reason},
    )
    return True


# --------------------------------------------------------------------------------------------
# Gold
# --------------------------------------------------------------------------------------------


def _check_answer(answer: object) -> str:
    if not isinstance(answer, str) or answer not in CHOICES:
        raise InvalidInput(
            f"A gold answer is one of {', '.join(CHOICES)}, not {answer!r}.",
            code="invalid_gold_answer",
        )
    return answer


def gold_pair_create(
    *,
    campaign: Campaign,
    prompt: Prompt,
    response_a: Response,
    response_b: Response,
    answer: str,
    created_by: User | None = None,
    source: Comparison | None = None,
) -> GoldPair:
    """A gold comparison: outside every round, never in the ordinary queue
    (``labels_required = 0``), served only by the gold mixing. Call inside a transaction."""
    comparison = Comparison.objects.create(
        campaign=campaign,
        prompt=prompt,
        response_a=response_a,
        response_b=response_b,
        acquisition_rule=AcquisitionRule.IMPORTED,
        labels_required=0,
        state=ComparisonState.LABELED,
    )
    gold = GoldPair.objects.create(
        comparison=comparison,
        campaign=campaign,
        source=source,
        answer=_check_answer(answer),
        created_by=created_by,
    )
    gold_rate_forget(campaign.pk)
    return gold


@transaction.atomic
def gold_mark(*, actor: User, campaign: Campaign, comparison_id: int, answer: str) -> GoldPair:
    """Mark a comparison of the campaign as gold with its known answer (the label
    browser's action): a gold copy is served to annotators who have not labeled it; the
    comparison's own labels are measured against the answer and no longer trained on."""
    _check_manager(actor, campaign)
    _check_answer(answer)
    source = Comparison.objects.filter(pk=comparison_id, campaign=campaign).first()
    if source is None:
        raise NotFound("No such comparison.", code="comparison_not_found")
    if GoldPair.objects.filter(comparison=source).exists():
        raise InvalidInput("This comparison is a gold pair already.", code="already_gold")
    existing = GoldPair.objects.filter(source=source).first()
    if existing is not None:
        before = existing.answer
        GoldPair.objects.filter(pk=existing.pk).update(answer=answer)
        existing.answer = answer
        gold = existing
    else:
        before = None
        gold = gold_pair_create(
            campaign=campaign,
            prompt=source.prompt,
            response_a=source.response_a,
            response_b=source.response_b,
            answer=answer,
            created_by=actor,
            source=source,
        )
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.MARK_GOLD,
        before={"comparison": source.pk, "answer": before},
        after={"comparison": source.pk, "gold": gold.comparison_id, "answer": answer},
    )
    return gold


@transaction.atomic
def gold_rate_set(*, actor: User, campaign: Campaign, rate: Any) -> RaterSettings:
    """Set the share of an annotator's new pairs that are gold pairs (0 to 0.5)."""
    _check_manager(actor, campaign)
    try:
        if isinstance(rate, bool):
            raise TypeError
        value = float(rate)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"The gold rate must be a number, not {rate!r}.", code="invalid_gold_rate"
        ) from None
    if not 0.0 <= value <= 0.5:
        raise InvalidInput("The gold rate is a share between 0 and 0.5.", code="invalid_gold_rate")
    row, _ = RaterSettings.objects.select_for_update().get_or_create(campaign=campaign)
    before = row.gold_rate
    RaterSettings.objects.filter(pk=row.pk).update(gold_rate=value)
    row.gold_rate = value
    AuditEntry.objects.create(
        actor=actor,
        campaign=campaign,
        action=AuditAction.GOLD_RATE,
        before={"gold_rate": before},
        after={"gold_rate": value},
    )
    transaction.on_commit(lambda: gold_rate_forget(campaign.pk))
    return row
