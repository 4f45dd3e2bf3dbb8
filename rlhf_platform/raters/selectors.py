"""Reads about raters: keys, what training and exports leave out, the page's rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.core.cache import cache
from django.db.models import Exists, OuterRef, Q

from ml_worker.core.rater_stats import agreement, wilson
from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.labeling.models import Label, LabelSource
from rlhf_platform.raters.models import GoldPair, RaterExclusion, RaterSettings

GOLD_RATE_CACHE_SECONDS = 60


def rater_key(label: Label) -> str:
    """``user:<id>`` for an annotator's label, ``judge:<name>`` for a judge's."""
    if label.source == LabelSource.JUDGE or label.annotator_id is None:
        return f"judge:{label.judge_name}"
    return f"user:{label.annotator_id}"


def left_out_q() -> Q:
    """Labels that training and exports leave out: those of excluded raters and those on
    gold pairs or the comparisons they were marked from (gold is for measuring raters,
    never for training). Use as
    ``Label.objects.exclude(left_out_q())``."""
    excluded = RaterExclusion.objects.filter(campaign_id=OuterRef("campaign_id"))
    gold = GoldPair.objects.filter(
        Q(comparison_id=OuterRef("comparison_id")) | Q(source_id=OuterRef("comparison_id"))
    )
    # Each Exists in a Q: the tree Django builds either way (Exists | Exists is
    # Q(...) | Q(...)), and a Q to mypy (django-stubs type Exists | Exists as a Combinable).
    return (
        Q(Exists(gold))
        | Q(Exists(excluded.filter(annotator_id=OuterRef("annotator_id"))))
        | (
            Q(source=LabelSource.JUDGE)
            & Q(Exists(excluded.filter(annotator__isnull=True, judge_name=OuterRef("judge_name"))))
        )
    )


def _gold_rate_key(campaign_id: int) -> str:
    return f"raters:gold_rate:{campaign_id}"


def gold_rate(campaign_id: int) -> float:
    """The campaign's gold mixing rate, cached: the next-pair hot path reads it, and pays a
    statement for it at most once a minute per process (0 when no gold pair exists)."""
    key = _gold_rate_key(campaign_id)
    rate = cache.get(key)
    if rate is None:
        row = (
            RaterSettings.objects.filter(campaign_id=campaign_id)
            .annotate(has_gold=Exists(GoldPair.objects.filter(campaign_id=campaign_id)))
            .values_list("gold_rate", "has_gold")
            .first()
        )
        rate = float(row[0]) if row and row[1] else 0.0
        cache.set(key, rate, GOLD_RATE_CACHE_SECONDS)
    return float(rate)


def gold_rate_forget(campaign_id: int) -> None:
    cache.delete(_gold_rate_key(campaign_id))


def gold_answers(campaign_id: int) -> dict[int, str]:
    """Comparison id -> known answer, for the gold pairs and the comparisons they were
    marked from."""
    out: dict[int, str] = {}
    for comp, source, answer in GoldPair.objects.filter(campaign_id=campaign_id).values_list(
        "comparison_id", "source_id", "answer"
    ):
        out[comp] = answer
        if source is not None:
            out[source] = answer
    return out


def _display_names(keys: list[str]) -> dict[str, str]:
    ids = [int(k.split(":", 1)[1]) for k in keys if k.startswith("user:")]
    names = dict(User.objects.filter(pk__in=ids).values_list("pk", "username"))
    return {
        k: names.get(int(k.split(":", 1)[1]), k) if k.startswith("user:") else k.split(":", 1)[1]
        for k in keys
    }


#: The labels-over-time chart: the campaign's labeling time split into this many equal spans.
TIMELINE_BUCKETS = 12


def _timeline(
    rows: list[tuple[str, dt.datetime]],
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Per rater, their labels in each of ``TIMELINE_BUCKETS`` equal spans between the
    campaign's first and last label (one time axis shared by every rater)."""
    if not rows:
        return {}, {"start": None, "end": None, "buckets": TIMELINE_BUCKETS}
    start = min(t for _, t in rows)
    end = max(t for _, t in rows)
    span = max((end - start).total_seconds(), 1e-9)
    per: dict[str, list[int]] = defaultdict(lambda: [0] * TIMELINE_BUCKETS)
    for key, created in rows:
        i = int((created - start).total_seconds() / span * TIMELINE_BUCKETS)
        per[key][min(i, TIMELINE_BUCKETS - 1)] += 1
    return dict(per), {"start": start, "end": end, "buckets": TIMELINE_BUCKETS}


def raters_overview(campaign: Campaign) -> dict[str, Any]:
    """Everything the raters page and ``GET .../raters/`` show, one row per rater.

    Estimates come from the last refit (``RaterSettings``); counts, gold accuracy and
    agreement are computed here from the labels (a few queries, whatever the number of
    raters). Gold answers are never part of the result.
    """
    settings_row = RaterSettings.objects.filter(campaign=campaign).first()
    estimates = settings_row.estimates if settings_row else {}
    labels = list(
        Label.objects.filter(campaign=campaign)
        .order_by("id")
        .values_list(
            "comparison_id", "source", "annotator_id", "judge_name", "choice", "created_at"
        )
    )
    keys = [
        f"judge:{j}" if s == LabelSource.JUDGE or a is None else f"user:{a}"
        for _, s, a, j, _, _ in labels
    ]
    gold = gold_answers(campaign.pk)
    items = [c for c, *_ in labels]
    choices = [ch for *_, ch, _ in labels]
    agree = agreement(items, keys, choices)
    judge_keys = {k for k in keys if k.startswith("judge:")}
    with_judge: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    judge_by_item: dict[int, list[str]] = defaultdict(list)
    for item, key, choice in zip(items, keys, choices, strict=True):
        if key in judge_keys:
            judge_by_item[item].append(choice)
    gold_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item, key, choice in zip(items, keys, choices, strict=True):
        if key not in judge_keys:
            for jc in judge_by_item.get(item, ()):
                with_judge[key][0] += int(jc == choice)
                with_judge[key][1] += 1
        if item in gold:
            gold_counts[key][0] += int(gold[item] == choice)
            gold_counts[key][1] += 1
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        counts[key] += 1
    excluded = dict(RaterExclusion.objects.filter(campaign=campaign).values_list("rater", "reason"))
    over_time, timeline = _timeline([(k, row[5]) for k, row in zip(keys, labels, strict=True)])
    all_keys = sorted(set(keys) | set(excluded), key=lambda k: (k.startswith("judge:"), k))
    names = _display_names(all_keys)
    rows = []
    for key in all_keys:
        est = estimates.get(key, {})
        g_right, g_n = gold_counts.get(key, (0, 0))
        a_same, a_n = agree.get(key, (0, 0))
        j_same, j_n = with_judge.get(key, (0, 0))
        rows.append(
            {
                "rater": key,
                "name": names[key],
                "kind": "judge" if key.startswith("judge:") else "human",
                "labels": counts.get(key, 0),
                "gold": {
                    "n": g_n,
                    "correct": g_right,
                    "accuracy": g_right / g_n if g_n else None,
                    "interval": wilson(g_right, g_n),
                },
                "agreement": {"n": a_n, "rate": a_same / a_n if a_n else None},
                "judge_agreement": {"n": j_n, "rate": j_same / j_n if j_n else None},
                "reliability": est.get("reliability"),
                "reliability_interval": est.get("reliability_interval"),
                "accuracy": est.get("accuracy"),
                "first_share": est.get("first_share"),
                "first_share_interval": est.get("first_share_interval"),
                "position_bias": est.get("position_bias"),
                "median_seconds": est.get("median_seconds"),
                "flags": est.get("flags", []),
                "excluded": key in excluded,
                "exclusion_reason": excluded.get(key, ""),
                "labels_over_time": over_time.get(key, [0] * TIMELINE_BUCKETS),
            }
        )
    return {
        "campaign": campaign.pk,
        "gold_rate": settings_row.gold_rate if settings_row else 0.0,
        "gold_pairs": GoldPair.objects.filter(campaign=campaign).count(),
        "fitted_at": settings_row.fitted_at if settings_row else None,
        "labels_fitted": settings_row.labels_fitted if settings_row else 0,
        "timeline": timeline,
        "raters": rows,
    }
