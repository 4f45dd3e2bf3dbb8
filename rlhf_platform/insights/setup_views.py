"""The researcher's campaign setup and curation pages: new campaign, import with preview,
members and invite links, state buttons, exports, and the label browser.

Thin function views: check access (the insights selectors), call one service, render.
Plain HTML works without JavaScript (forms post, the answer redirects or re-renders the
page); htmx enhances it (an htmx request gets the fragment it swaps in). Every write goes
through a service that logs it in the audit log.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from rlhf_platform import limits
from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import Campaign, Invite
from rlhf_platform.campaigns.selectors import (
    campaign_progress,
    can_manage,
    get_user_by_username,
)
from rlhf_platform.campaigns.services import campaign_create, invite_accept
from rlhf_platform.datafiles import formats, imports
from rlhf_platform.datafiles.preview import IMPORT_KINDS, import_preview
from rlhf_platform.errors import Conflict, InvalidInput, NotFound, PermissionDenied, ServiceError
from rlhf_platform.insights import campaign_form, label_browser, selectors, services
from rlhf_platform.insights.models import TRIAL_PAIR, JudgeTrial
from rlhf_platform.insights.views import STATE_WORDS, _state_actions, insights_view

INVITE_HOURS = ((24, "1 day"), (24 * 7, "7 days"), (24 * 30, "30 days"), (1, "1 hour"))


def _is_partial(request: HttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _next_or(request: HttpRequest, default: str) -> str:
    """The form's ``next`` when it is a path on this site, else ``default``."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _manage_url(campaign: Campaign, anchor: str = "") -> str:
    url = reverse("insights:manage", args=[campaign.pk])
    return f"{url}#{anchor}" if anchor else url


# --- New campaign ----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@insights_view
def campaign_new(request: HttpRequest) -> HttpResponse:
    """The form of every campaign setting, validated by the one campaign definition."""
    if not request.user.is_researcher:
        raise PermissionDenied("Only researchers and admins create campaigns.")
    typed, errors = campaign_form.initial_values(), {}
    if request.method == "POST":
        values, errors, typed = campaign_form.definition_from_post(request.POST)
        if not errors:
            try:
                campaign = campaign_create(owner=request.user, **values)
            except Conflict as exc:
                errors = {"name": [exc.message]}
            except InvalidInput as exc:  # the judge endpoint (egress allow-list)
                errors = {"judge_base_url" if "judge" in exc.code else "form": [exc.message]}
            except ValidationError as exc:
                errors = {"form": exc.messages}
            else:
                messages.success(
                    request, f"Campaign {campaign.name!r} created as a draft. Add its prompts."
                )
                return redirect(_manage_url(campaign))
    groups = [
        {
            "title": g.title,
            "fields": [
                {"f": f, "value": typed.get(f.name, ""), "errors": errors.get(f.name, [])}
                for f in g.fields
            ],
        }
        for g in campaign_form.GROUPS
    ]
    status = 400 if errors else 200
    return render(
        request,
        "insights/campaign_new.html",
        {
            "groups": groups,
            "form_errors": errors.get("form", []),
            "error_count": sum(len(v) for v in errors.values()),
            "judges": campaign_form.judge_choices(),
        },
        status=status,
    )


@require_POST
@insights_view
def judge_try(request: HttpRequest) -> HttpResponse:
    """ "Try it on one pair": queue the judge the form describes on a worker; the answer
    fragment polls until the worker has answered."""
    if not request.user.is_researcher:
        raise PermissionDenied("Only researchers and admins try judges.")
    config, errors = campaign_form.judge_config_from_post(request.POST)
    trial = None
    if not errors:
        try:
            trial = services.judge_trial_request(actor=request.user, judge_config=config)
        except InvalidInput as exc:
            errors = {"judge_base_url": [exc.message]}
    ctx = {"trial": trial, "errors": [m for ms in errors.values() for m in ms]}
    ctx |= _trial_context(trial)
    template = "insights/_judge_trial.html" if _is_partial(request) else "insights/judge_trial.html"
    return render(request, template, ctx, status=400 if errors else 200)


def _trial_context(trial: JudgeTrial | None) -> dict[str, Any]:
    return {"query": TRIAL_PAIR, "poll_seconds": 1 if trial is not None else 0}


@require_GET
@insights_view
def judge_trial_page(request: HttpRequest, trial_id: int) -> HttpResponse:
    if not request.user.is_researcher:
        raise PermissionDenied("Only researchers and admins try judges.")
    trial = JudgeTrial.objects.filter(pk=trial_id, created_by=request.user).first()
    if trial is None:
        raise Http404("No such trial.")
    ctx = {"trial": trial, "errors": [], **_trial_context(trial)}
    template = "insights/_judge_trial.html" if _is_partial(request) else "insights/judge_trial.html"
    return render(request, template, ctx)


# --- Manage: state, import, members, exports --------------------------------------------------


def _manage_context(request: HttpRequest, campaign: Campaign, **extra: Any) -> dict[str, Any]:
    memberships = campaign.memberships.select_related("user").order_by("user__username")
    invites = Invite.objects.filter(campaign=campaign, revoked_at__isnull=True).order_by(
        "-created_at"
    )
    return {
        "campaign": campaign,
        "actions": _state_actions(campaign),
        "members": memberships,
        "invites": invites,
        "invite_hours": INVITE_HOURS,
        "progress": campaign_progress(campaign),
        "audit": selectors.audit_log(campaign, limit=20),
        "now": timezone.now(),
        "export_sources": formats.LABEL_SOURCES,
        "export_forms": formats.PREFERENCE_FORMS,
        "export_formats": formats.LABEL_FORMATS,
        **extra,
    }


@require_GET
@insights_view
def campaign_manage(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    return render(request, "insights/manage.html", _manage_context(request, campaign))


@require_POST
@insights_view
def campaign_state(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Start, pause, resume or finish, confirmed: a plain post without ``confirmed``
    answers a confirmation page; htmx buttons ask in the browser (``hx-confirm``) and send
    ``confirmed``. Audited (``campaign_state_audited``)."""
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    action = request.POST.get("action", "")
    if action not in STATE_WORDS:
        raise Http404("No such action.")
    if request.POST.get("confirmed") != "1":
        words = STATE_WORDS[action]
        return render(
            request,
            "insights/confirm_state.html",
            {"campaign": campaign, "action": action, "label": words[0], "note": words[2]},
        )
    try:
        campaign = services.campaign_state_audited(
            actor=request.user, campaign=campaign, action=action
        )
        messages.success(request, f"Campaign {STATE_WORDS[action][1]}.")
    except (InvalidInput, Conflict) as exc:
        messages.error(request, exc.message)
    return redirect(_next_or(request, _manage_url(campaign)))


@limits.allows_large_body
@require_POST
@insights_view
def campaign_import(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Preview a prompt or pair file (first rows, every bad row), or import it: all rows
    or none (the existing import services check the whole file again)."""
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    kind = request.POST.get("kind", "prompts")
    upload = request.FILES.get("file")
    ctx: dict[str, Any] = {"import_kind": kind}
    error = ""
    if kind not in IMPORT_KINDS:
        error = "Choose prompts or pairs."
    elif upload is None:
        error = "Choose a file to upload."
    elif upload.size > settings.IMPORT_MAX_BYTES:
        error = (
            f"The file is {upload.size} bytes; at most "
            f"{limits.describe(settings.IMPORT_MAX_BYTES)} (IMPORT_MAX_BYTES) are accepted."
        )
    preview = None
    if not error:
        try:
            fmt = formats.format_from_name(upload.name or "", request.POST.get("format") or None)
            data = upload.read()
            preview = import_preview(data=data, fmt=fmt, kind=kind)
            if request.POST.get("do") == "import" and preview.ok:
                run = (
                    imports.prompts_import_file if kind == "prompts" else imports.pairs_import_file
                )
                count = run(campaign=campaign, data=data, fmt=fmt)
                ctx["imported"] = count
                messages.success(request, f"Imported {count} {kind} from {upload.name}.")
                if not _is_partial(request):
                    return redirect(_manage_url(campaign, "import"))
        except InvalidInput as exc:
            error = exc.message
    ctx |= {"preview": preview, "import_error": error, "file_name": upload.name if upload else ""}
    status = 400 if error or (preview and not preview.ok) else 200
    if _is_partial(request):
        return render(
            request, "insights/_import_result.html", {"campaign": campaign, **ctx}, status=status
        )
    return render(
        request, "insights/manage.html", _manage_context(request, campaign, **ctx), status=status
    )


@require_POST
@insights_view
def members_add(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    username = request.POST.get("username", "").strip()[:150]
    try:
        user = get_user_by_username(username)
        added = services.member_add_audited(actor=request.user, campaign=campaign, user=user)
        if added:
            messages.success(request, f"{user.username} is now a member.")
        else:
            messages.info(request, f"{user.username} was a member already.")
    except NotFound as exc:
        messages.error(request, exc.message)
    return redirect(_manage_url(campaign, "members"))


@require_POST
@insights_view
def members_remove(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    user = User.objects.filter(username=request.POST.get("username", "")[:150]).first()
    try:
        if user is None:
            raise NotFound("No such user.")
        services.member_remove_audited(actor=request.user, campaign=campaign, user=user)
        messages.success(request, f"{user.username} was removed; their labels stay.")
    except NotFound as exc:
        messages.error(request, exc.message)
    return redirect(_manage_url(campaign, "members"))


@require_POST
@insights_view
def invite_new(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """A new invite link, shown once on the page that answers (only its hash is kept)."""
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    try:
        hours = int(request.POST.get("hours", "168"))
        _, token = services.invite_create_audited(
            actor=request.user, campaign=campaign, hours=hours
        )
    except (ValueError, InvalidInput):
        messages.error(request, "An invite lasts 1 hour to 30 days.")
        return redirect(_manage_url(campaign, "members"))
    link = request.build_absolute_uri(reverse("insights:invite", args=[token]))
    return render(
        request, "insights/manage.html", _manage_context(request, campaign, invite_link=link)
    )


@require_POST
@insights_view
def invite_revoke(request: HttpRequest, campaign_id: int, invite_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    try:
        services.invite_revoke_audited(actor=request.user, campaign=campaign, invite_id=invite_id)
        messages.success(request, "Invite link revoked.")
    except NotFound as exc:
        messages.error(request, exc.message)
    return redirect(_manage_url(campaign, "members"))


@require_http_methods(["GET", "POST"])
def invite_page(request: HttpRequest, token: str) -> HttpResponse:
    """Whoever opens a valid link (logged in) may join its campaign as a member."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if request.method == "POST":
        try:
            campaign = invite_accept(token=token[:100], user=request.user)
        except ServiceError as exc:
            return render(
                request, "insights/invite.html", {"error": exc.message}, status=exc.status
            )
        messages.success(request, f"You joined {campaign.name}.")
        return redirect("annotator_ui:label", campaign.pk)
    return render(request, "insights/invite.html", {"token": token[:100]})


# --- Label browser ----------------------------------------------------------------------------


@require_GET
@insights_view
def labels_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_researcher(request.user, campaign_id)
    filters = label_browser.filters_from(request.GET)
    page = Paginator(label_browser.labels(campaign, **filters), label_browser.PAGE).get_page(
        request.GET.get("page")
    )
    ctx = {
        "campaign": campaign,
        "page": page,
        "filters": filters,
        "query": label_browser.query_string(filters),
        "can_flag": can_manage(request.user, campaign),
        "annotators": label_browser.annotator_names(campaign),
        "rounds": label_browser.round_indexes(campaign),
        "choices": label_browser.CHOICES,
        "sorts": label_browser.SORTS,
    }
    if _is_partial(request) and request.htmx.target == "label-table":
        return render(request, "insights/_label_table.html", ctx)
    return render(request, "insights/labels.html", ctx)


@require_POST
@insights_view
def label_flag(request: HttpRequest, campaign_id: int, label_id: int) -> HttpResponse:
    campaign = selectors.get_campaign_for_budget(request.user, campaign_id)
    flagged = request.POST.get("flagged") == "1"
    try:
        services.label_flag_set(
            actor=request.user,
            campaign=campaign,
            label_id=label_id,
            flagged=flagged,
            reason=request.POST.get("reason", "").strip()[:200],
        )
    except NotFound:
        raise Http404("No such label.") from None
    if _is_partial(request):
        label = label_browser.labels(campaign).get(pk=label_id)
        return render(
            request,
            "insights/_label_row.html",
            {"campaign": campaign, "label": label, "can_flag": True},
        )
    messages.success(request, "Label flagged." if flagged else "Flag removed.")
    return redirect(_next_or(request, reverse("insights:labels", args=[campaign.pk])))
