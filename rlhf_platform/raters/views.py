"""The raters pages (issue 20): per campaign (its owner and admins) and across campaigns
(admins: every campaign; researchers: the campaigns they own). Thin function views: check
access, read through the selectors, call one service, render. Everything shown is escaped
by the templates; the small charts are SVG drawn here from numbers only."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.errors import InvalidInput, PermissionDenied
from rlhf_platform.insights.selectors import get_campaign_for_budget
from rlhf_platform.insights.views import insights_view
from rlhf_platform.raters.selectors import raters_overview
from rlhf_platform.raters.services import gold_mark, gold_rate_set, rater_exclusion_set


def sparkline(counts: list[int], *, top: int, width: int = 120) -> str:
    """Labels per time span as bars, an inline SVG drawn from integers only; ``top`` is the
    largest count of the table, so that raters compare at a glance."""
    if not counts or not any(counts):
        return ""
    height, n, top = 24, len(counts), max(1, top)
    bar = max(1.0, width / n - 1)
    rects = []
    for i, count in enumerate(counts):
        h = height * int(count) / top
        if count:
            h = max(h, 1.0)
        rects.append(
            f'<rect x="{i * width / n:.1f}" y="{height - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}"><title>span {i + 1} of {n}: {int(count)} labels</title></rect>'
        )
    return (
        f'<svg class="spark" role="img" aria-label="labels over time" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{"".join(rects)}</svg>'
    )


def _rows(overview: dict[str, Any]) -> list[dict[str, Any]]:
    top = max((max(r["labels_over_time"], default=0) for r in overview["raters"]), default=0)
    return [r | {"spark": sparkline(r["labels_over_time"], top=top)} for r in overview["raters"]]


@require_GET
@insights_view
def raters_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_campaign_for_budget(request.user, campaign_id)
    overview = raters_overview(campaign)
    return render(
        request,
        "raters/raters.html",
        {"campaign": campaign, "overview": overview, "rows": _rows(overview)},
    )


@require_POST
@insights_view
def rater_exclusion(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_campaign_for_budget(request.user, campaign_id)
    excluded = request.POST.get("excluded") == "1"
    rater = request.POST.get("rater", "")[:120]
    try:
        rater_exclusion_set(
            actor=request.user,
            campaign=campaign,
            rater=rater,
            excluded=excluded,
            reason=request.POST.get("reason", "").strip()[:200],
        )
        messages.success(request, "Rater excluded." if excluded else "Rater included again.")
    except InvalidInput as exc:
        messages.error(request, exc.message)
    return redirect(reverse("raters:campaign", args=[campaign.pk]))


@require_POST
@insights_view
def gold(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The page's gold rate form, and the label browser's "mark as gold"."""
    campaign = get_campaign_for_budget(request.user, campaign_id)
    try:
        if "comparison_id" in request.POST:
            raw = request.POST.get("comparison_id", "")
            if not raw.isdigit():
                raise InvalidInput("No such comparison.", code="comparison_not_found")
            gold_mark(
                actor=request.user,
                campaign=campaign,
                comparison_id=int(raw),
                answer=request.POST.get("answer", ""),
            )
            messages.success(request, "Marked as a gold pair.")
        else:
            gold_rate_set(actor=request.user, campaign=campaign, rate=request.POST.get("rate"))
            messages.success(request, "Gold rate saved.")
    except InvalidInput as exc:
        messages.error(request, exc.message)
    target = request.POST.get("next", "")
    if target.startswith("/research/") and "//" not in target:
        return redirect(target)
    return redirect(reverse("raters:campaign", args=[campaign.pk]))


@require_GET
@insights_view
def raters_admin(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user.is_researcher:
        raise PermissionDenied("Only admins and researchers may open this page.")
    campaigns = Campaign.objects.order_by("-id")
    if not user.is_platform_admin:
        campaigns = campaigns.filter(owner=user)
    sections = []
    for campaign in campaigns[:50]:
        overview = raters_overview(campaign)
        if overview["raters"]:
            sections.append({"campaign": campaign, "overview": overview, "rows": _rows(overview)})
    return render(request, "raters/raters_admin.html", {"sections": sections})
