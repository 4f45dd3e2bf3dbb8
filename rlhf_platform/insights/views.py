"""Researcher and admin pages: thin function views (check access through the selectors,
read, render). Charts are SVG drawn on the server (:mod:`charts`); every chart links to a
CSV of its data (:mod:`tables`). The ledger filter is htmx-enhanced: an htmx request gets
the table fragment, a plain one the whole page.

Access: researcher pages need a researcher or admin who may see the campaign; budget pages
the campaign's owner or an admin. Others get 403 (wrong role) or 404 (a campaign they may
not see), the CSV downloads included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from rlhf_platform.campaigns.models import CampaignState
from rlhf_platform.campaigns.selectors import campaign_progress, can_manage
from rlhf_platform.campaigns.services import STATE_ACTIONS
from rlhf_platform.datafiles import formats
from rlhf_platform.errors import InvalidInput, NotFound, PermissionDenied, ServiceError
from rlhf_platform.insights import charts, selectors, services, tables

DEFAULT_TARGET = 0.75
LEDGER_PAGE = 50
# While a campaign runs, its research, agreement and budget pages poll themselves (htmx,
# hx-select of #live) this often. Tests shorten it.
LIVE_POLL_SECONDS = 5


def _live(request: HttpRequest, campaign) -> dict[str, Any]:
    """Context of the self-refreshing part of a page (see ``_live_open.html``)."""
    params = request.GET.copy()
    params["live"] = "1"
    return {
        "live": campaign.state == CampaignState.RUNNING,
        "live_url": f"{request.path}?{params.urlencode()}",
        "live_seconds": LIVE_POLL_SECONDS,
    }


def insights_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required, no caching, ``Vary: HX-Request``; service errors become 403/404."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            response = view(request, *args, **kwargs)
        except PermissionDenied:
            return render(request, "403.html", status=403)
        except NotFound:
            raise Http404("No such campaign.") from None
        patch_vary_headers(response, ["HX-Request"])
        return response

    return never_cache(wrapper)


STATE_WORDS = {
    "start": ("Start", "started", "Annotators can label and rounds begin."),
    "pause": ("Pause", "paused", "Annotators are told it is paused; nothing is served."),
    "resume": ("Resume", "resumed", "Labeling and rounds go on."),
    "finish": ("Finish", "finished", "This cannot be undone: nothing more is served."),
}


def _state_actions(campaign) -> list[dict[str, str]]:
    """The state buttons a campaign in its current state offers."""
    return [
        {"action": a, "label": STATE_WORDS[a][0], "note": STATE_WORDS[a][2]}
        for a, (sources, _) in STATE_ACTIONS.items()
        if campaign.state in sources
    ]


def _csv(table: tables.Table, filename: str) -> HttpResponse:
    response = HttpResponse(tables.to_csv(table), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _target(request: HttpRequest) -> float:
    try:
        target = float(request.GET.get("target", DEFAULT_TARGET))
    except ValueError:
        return DEFAULT_TARGET
    return target if 0.5 < target < 1 else DEFAULT_TARGET


def _series(campaigns, series, fits=None) -> list[charts.Series]:
    out = []
    for i, c in enumerate(campaigns):
        points = [(p.labels, p.win_rate, p.ci_low, p.ci_high) for p in series[c.pk]]
        curve = []
        fit = fits.get(c.pk) if fits else None
        xs = [p[0] for p in points if p[0] > 0]
        if fit and xs:
            lo, hi = min(xs), max(xs) * 4  # extrapolate two doublings past the data
            curve = [(x, fit.win_rate(x)) for x in (lo * (hi / lo) ** (k / 40) for k in range(41))]
        out.append(
            charts.Series(
                f"{c.name} ({c.get_algorithm_display()})",
                points,
                charts.PALETTE[i % len(charts.PALETTE)],
                curve,
            )
        )
    return out


# --- Researcher pages -----------------------------------------------------------------------


@require_GET
@insights_view
def research_home(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.research_campaigns(request.user)
    return render(
        request,
        "insights/research_home.html",
        {"campaigns": campaigns, "target": DEFAULT_TARGET},
    )


def _campaign_data(campaign, target: float) -> dict[str, Any]:
    series = {campaign.pk: selectors.win_rate_series(campaign)}
    (fit_row,) = selectors.extrapolation([campaign], series, target=target)
    return {
        "timeline": selectors.rounds_timeline(campaign),
        "series": series,
        "fit_row": fit_row,
        "accuracy": selectors.reward_accuracy(campaign),
        "scores": selectors.acquisition_scores(campaign),
    }


@require_GET
@insights_view
def campaign_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_researcher(request.user, campaign_id)
    target = _target(request)
    data = _campaign_data(campaign, target)
    fit = data["fit_row"].fit
    context = {
        "campaign": campaign,
        "target": target,
        **data,
        **_live(request, campaign),
        "progress": campaign_progress(campaign),
        "can_manage": can_manage(request.user, campaign),
        "actions": _state_actions(campaign),
        "export_sources": formats.LABEL_SOURCES,
        "export_forms": formats.PREFERENCE_FORMS,
        "export_formats": formats.LABEL_FORMATS,
        "timeline_chart": charts.timeline_chart(
            data["timeline"], label=f"Rounds of {campaign.name}: time in each state"
        ),
        "win_chart": charts.line_chart(
            _series([campaign], data["series"], {campaign.pk: fit}),
            kind="win-rate",
            label="Win rate against labels spent, with its 95% confidence band",
            x_label="labels spent",
            y_label="win rate vs. initial policy",
        ),
        "accuracy_chart": charts.bar_chart(
            [
                (
                    f"r{a.round_index}" if a.round_index is not None else f"v{a.version_id}",
                    a.accuracy,
                    f"version {a.version_id}: {a.correct}/{a.labels} held-out labels right",
                )
                for a in data["accuracy"]
            ],
            kind="reward-accuracy",
            label="Reward-model accuracy on held-out labels, per version",
            y_label="accuracy",
        ),
        "scores_chart": charts.box_chart(
            [(f"r{g.round_index}", g.summary, g.scores) for g in data["scores"]],
            kind="acquisition-scores",
            label="Acquisition scores of the served comparisons, per round",
            y_label="acquisition score",
        ),
    }
    return render(request, "insights/campaign.html", context)


CAMPAIGN_CSVS = ("rounds", "win-rate", "fit", "reward-accuracy", "acquisition-scores")


@require_GET
@insights_view
def campaign_csv(request: HttpRequest, campaign_id: int, chart: str) -> HttpResponse:
    campaign = selectors.get_campaign_for_researcher(request.user, campaign_id)
    if chart not in CAMPAIGN_CSVS:
        raise Http404("No such chart.")
    target = _target(request)
    if chart == "rounds":
        table = tables.rounds_table(selectors.rounds_timeline(campaign))
    elif chart == "reward-accuracy":
        table = tables.reward_accuracy_table(selectors.reward_accuracy(campaign))
    elif chart == "acquisition-scores":
        table = tables.scores_table(selectors.acquisition_scores(campaign))
    else:
        series = {campaign.pk: selectors.win_rate_series(campaign)}
        if chart == "win-rate":
            table = tables.win_rate_table([campaign], series)
        else:
            rows = selectors.extrapolation([campaign], series, target=target)
            table = tables.fit_table(rows, target)
    return _csv(table, f"campaign-{campaign.pk}-{chart}.csv")


def _compare_ids(request: HttpRequest) -> list[int]:
    try:
        ids = [int(v) for v in request.GET.getlist("c")]
    except ValueError:
        raise Http404("No such campaign.") from None
    return ids


@require_GET
@insights_view
def compare_page(request: HttpRequest) -> HttpResponse:
    ids = _compare_ids(request)
    if not ids:
        messages.info(request, "Pick the campaigns to compare.")
        return redirect("insights:research")
    campaigns = selectors.get_campaigns_for_researcher(request.user, ids)
    target = _target(request)
    series = {c.pk: selectors.win_rate_series(c) for c in campaigns}
    fit_rows = selectors.extrapolation(campaigns, series, target=target)
    fits = {r.campaign.pk: r.fit for r in fit_rows}
    chart = charts.line_chart(
        _series(campaigns, series, fits),
        kind="overlay",
        label="Win rate against labels spent, campaigns overlaid",
        x_label="labels spent",
        y_label="win rate vs. initial policy",
    )
    query = "&".join(f"c={c.pk}" for c in campaigns)
    return render(
        request,
        "insights/compare.html",
        {
            "campaigns": campaigns,
            "target": target,
            "fit_rows": fit_rows,
            "chart": chart,
            "query": query,
            "reference": next((r for r in fit_rows if r.ratio == 1.0), None),
        },
    )


@require_GET
@insights_view
def compare_csv(request: HttpRequest, chart: str) -> HttpResponse:
    campaigns = selectors.get_campaigns_for_researcher(request.user, _compare_ids(request))
    series = {c.pk: selectors.win_rate_series(c) for c in campaigns}
    if chart == "win-rate":
        table = tables.win_rate_table(campaigns, series)
    elif chart == "fit":
        target = _target(request)
        table = tables.fit_table(selectors.extrapolation(campaigns, series, target=target), target)
    else:
        raise Http404("No such chart.")
    return _csv(table, f"compare-{chart}.csv")


@require_GET
@insights_view
def agreement_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_researcher(request.user, campaign_id)
    agreement = selectors.human_judge_agreement(campaign)
    chart = charts.bar_chart(
        [
            (
                a.username,
                a.with_judge,
                f"{a.username}: agrees with the judge on {a.with_judge_n} judged labels",
            )
            for a in agreement.annotators
        ],
        kind="annotator-agreement",
        label="Agreement of each annotator with the judge",
        y_label="agreement with the judge",
    )
    confusion_rows = [
        (choice, agreement.confusion[i] if agreement.confusion else [])
        for i, choice in enumerate(selectors.stats.CHOICES)
    ]
    return render(
        request,
        "insights/agreement.html",
        {
            "campaign": campaign,
            "agreement": agreement,
            "chart": chart,
            "choices": selectors.stats.CHOICES,
            "confusion_rows": confusion_rows,
            **_live(request, campaign),
        },
    )


AGREEMENT_CSVS = ("confusion", "annotators", "disagreements")


@require_GET
@insights_view
def agreement_csv(request: HttpRequest, campaign_id: int, table: str) -> HttpResponse:
    campaign = selectors.get_campaign_for_researcher(request.user, campaign_id)
    if table not in AGREEMENT_CSVS:
        raise Http404("No such table.")
    agreement = selectors.human_judge_agreement(campaign)
    build = {
        "confusion": tables.confusion_csv_table,
        "annotators": tables.annotators_agreement_table,
        "disagreements": tables.disagreements_table,
    }[table]
    return _csv(build(agreement), f"campaign-{campaign.pk}-agreement-{table}.csv")


def _time_unit(span_hours: float) -> tuple[float, str]:
    """A factor from hours, and the unit's name, that keeps the axis numbers readable."""
    if span_hours < 2 / 60:
        return 3600.0, "seconds"
    if span_hours < 2:
        return 60.0, "minutes"
    if span_hours < 72:
        return 1.0, "hours"
    return 1 / 24, "days"


# --- Budget (admin) pages -------------------------------------------------------------------


@require_GET
@insights_view
def budgets_home(request: HttpRequest) -> HttpResponse:
    overviews = [selectors.budget_overview(c) for c in selectors.budget_campaigns(request.user)]
    return render(request, "insights/budgets_home.html", {"overviews": overviews})


def _ledger_filters(request: HttpRequest) -> dict[str, Any]:
    def day(name: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(request.GET.get(name, ""))
        except ValueError:
            return None

    source = request.GET.get("source", "")
    return {
        "source": source if source in selectors.LEDGER_SOURCES else "",
        "annotator": request.GET.get("annotator", "").strip()[:150],
        "since": day("since"),
        "until": day("until"),
    }


@require_GET
@insights_view
def budget_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    filters = _ledger_filters(request)
    ledger = Paginator(selectors.ledger_entries(campaign, **filters), LEDGER_PAGE).get_page(
        request.GET.get("page")
    )
    context: dict[str, Any] = {"campaign": campaign, "ledger": ledger, "filters": filters}
    context["ledger_query"] = "&".join(
        f"{k}={v}" for k, v in filters.items() if v not in ("", None)
    )
    if request.htmx and not request.htmx.history_restore_request and not request.GET.get("live"):
        return render(request, "insights/_ledger.html", context)
    overview = selectors.budget_overview(campaign)
    agreement = selectors.human_judge_agreement(campaign)
    entries = list(selectors.ledger_entries(campaign))
    _, rows = tables.cumulative_spend(entries)
    first = entries[-1].created_at if entries else None
    hours = [(dt.datetime.fromisoformat(r[0]) - first).total_seconds() / 3600 for r in rows]
    scale, unit = _time_unit(max(hours, default=0.0))
    points = [(h * scale, r[1], None, None) for h, r in zip(hours, rows, strict=True)]
    cap = overview.budget.label_cap
    y_max = charts.nice_ceiling(max([cap or 0, *(p[1] for p in points), 1]))
    spend_chart = charts.line_chart(
        [charts.Series("labels spent", points, charts.PALETTE[0])],
        kind="spend",
        label="Labels spent over time" + (f" (cap {cap})" if cap else ""),
        x_label=f"{unit} since the first label",
        y_label="labels spent",
        log_x=False,
        y_range=(0, y_max),
        reference_y=cap,
    )
    throughput = selectors.annotator_throughput(campaign, agreement=agreement)
    context |= {
        "overview": overview,
        "spend": selectors.spend_by_source(campaign),
        "throughput": throughput,
        "throughput_chart": charts.bar_chart(
            [(t.username, t.labels_per_hour, f"{t.username}: labels per hour") for t in throughput],
            kind="throughput",
            label="Labels per hour of time on task, per annotator",
            y_label="labels per hour",
            y_range=(
                0,
                charts.nice_ceiling(max([t.labels_per_hour or 0 for t in throughput] + [1])),
            ),
        ),
        "spend_chart": spend_chart,
        "audit": selectors.audit_log(campaign),
        "ledger_sources": selectors.LEDGER_SOURCES,
        **_live(request, campaign),
    }
    return render(request, "insights/budget.html", context)


BUDGET_CSVS = ("ledger", "spend", "throughput", "spend-over-time")


@require_GET
@insights_view
def budget_csv(request: HttpRequest, campaign_id: int, table: str) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    if table == "ledger":
        data = tables.ledger_table(
            selectors.ledger_entries(campaign, **_ledger_filters(request)).iterator()
        )
    elif table == "spend":
        data = tables.spend_table(selectors.spend_by_source(campaign))
    elif table == "throughput":
        agreement = selectors.human_judge_agreement(campaign)
        data = tables.throughput_table(
            selectors.annotator_throughput(campaign, agreement=agreement)
        )
    elif table == "spend-over-time":
        data = tables.cumulative_spend(list(selectors.ledger_entries(campaign)))
    else:
        raise Http404("No such table.")
    return _csv(data, f"campaign-{campaign.pk}-{table}.csv")


@require_POST
@insights_view
def budget_state(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    action = request.POST.get("action", "")
    try:
        services.campaign_pause_audited(actor=request.user, campaign=campaign, action=action)
        messages.success(request, f"Campaign {'paused' if action == 'pause' else 'resumed'}.")
    except (InvalidInput, ServiceError) as exc:
        if isinstance(exc, (PermissionDenied, NotFound)):
            raise
        messages.error(request, exc.message)
    return redirect(reverse("insights:budget", args=[campaign.pk]))


@require_POST
@insights_view
def budget_caps(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    changes = {k: request.POST[k].strip() for k in services.CAP_FIELDS if k in request.POST}
    try:
        entry = services.budget_change_caps(actor=request.user, campaign=campaign, changes=changes)
        messages.success(request, "Caps saved." if entry else "Nothing changed.")
    except ServiceError as exc:
        if isinstance(exc, (PermissionDenied, NotFound)):
            raise
        messages.error(request, exc.message)
    return redirect(reverse("insights:budget", args=[campaign.pk]))
