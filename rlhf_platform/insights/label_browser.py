"""Reads of the label browser: a campaign's labels, filtered and sorted in the database
(so pagination stays exact), with what each row shows.

Disagreement, as the filters define it:
- *with the judge*: a human label whose comparison has a judge label with another choice;
- *with the majority*: a label whose choice got less than half of its comparison's
  labels (human and judge), on comparisons with two labels or more.
"""

from __future__ import annotations

from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import QueryDict

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.labeling.models import Choice, Label, LabelSource

PAGE = 25
CHOICES = tuple(Choice.choices)
SORTS = (
    ("newest", "Newest first", ("-created_at", "-id")),
    ("oldest", "Oldest first", ("created_at", "id")),
    ("slowest", "Slowest first", ("-time_taken_ms", "-id")),
    ("fastest", "Fastest first", ("time_taken_ms", "id")),
)
DISAGREEMENTS = ("", "judge", "majority")
FLAGS = ("", "flagged", "unflagged")


def filters_from(params: QueryDict) -> dict[str, Any]:
    """The browser's filters from a query string; an unknown value is ignored."""

    def pick(name: str, allowed) -> str:
        value = params.get(name, "")
        return value if value in allowed else ""

    try:
        round_index: int | None = int(params.get("round", ""))
    except ValueError:
        round_index = None
    return {
        "annotator": params.get("annotator", "").strip()[:150],
        "source": pick("source", LabelSource.values),
        "choice": pick("choice", Choice.values),
        "round_index": round_index,
        "disagreement": pick("disagreement", DISAGREEMENTS),
        "flag": pick("flag", FLAGS),
        "q": params.get("q", "").strip()[:200],
        "sort": pick("sort", [s[0] for s in SORTS]) or "newest",
    }


def query_string(filters: dict[str, Any]) -> str:
    names = {"round_index": "round"}
    return "&".join(
        f"{names.get(k, k)}={v}"
        for k, v in filters.items()
        if v not in ("", None) and not (k == "sort" and v == "newest")
    )


def labels(
    campaign: Campaign,
    *,
    annotator: str = "",
    source: str = "",
    choice: str = "",
    round_index: int | None = None,
    disagreement: str = "",
    flag: str = "",
    q: str = "",
    sort: str = "newest",
) -> QuerySet[Label]:
    """The campaign's labels with what a row shows (annotator, round, pair texts)."""
    same_comparison = Label.objects.filter(comparison=OuterRef("comparison"))
    qs = (
        Label.objects.filter(campaign=campaign)
        .select_related(
            "annotator",
            "flagged_by",
            "comparison__round",
            "comparison__prompt",
            "comparison__response_a",
            "comparison__response_b",
        )
        .annotate(
            judge_disagrees=Exists(
                same_comparison.filter(source=LabelSource.JUDGE).exclude(choice=OuterRef("choice"))
            )
        )
    )
    if annotator:
        qs = qs.filter(annotator__username=annotator)
    if source:
        qs = qs.filter(source=source)
    if choice:
        qs = qs.filter(choice=choice)
    if round_index is not None:
        qs = qs.filter(comparison__round__index=round_index)
    if flag == "flagged":
        qs = qs.filter(flagged_at__isnull=False)
    elif flag == "unflagged":
        qs = qs.filter(flagged_at__isnull=True)
    if q:
        qs = qs.filter(rationale__icontains=q)
    if disagreement == "judge":
        qs = qs.filter(source=LabelSource.HUMAN, judge_disagrees=True)
    elif disagreement == "majority":

        def count(extra: dict[str, Any]):
            return Coalesce(
                Subquery(
                    same_comparison.filter(**extra)
                    .values("comparison")
                    .annotate(n=Count("id"))
                    .values("n"),
                    output_field=IntegerField(),
                ),
                Value(0),
            )

        qs = (
            qs.annotate(n_all=count({}), n_same=count({"choice": OuterRef("choice")}))
            .annotate(n_same_twice=F("n_same") * 2)
            .filter(n_all__gte=2, n_same_twice__lt=F("n_all"))
        )
    order = next(s[2] for s in SORTS if s[0] == sort)
    return qs.order_by(*order)


def annotator_names(campaign: Campaign) -> list[str]:
    return list(
        Label.objects.filter(campaign=campaign, annotator__isnull=False)
        .values_list("annotator__username", flat=True)
        .distinct()
        .order_by("annotator__username")
    )


def round_indexes(campaign: Campaign) -> list[int]:
    return list(campaign.rounds.order_by("index").values_list("index", flat=True))
