"""Annotator pages: function views, thin (check access, call one service, render).

Every page is a plain HTML page first; htmx enhances it. A view answers an htmx request
(``request.htmx``, header ``HX-Request: true``) with the fragment it swaps in, and a plain
request with the whole page, or with a redirect after a POST (post/redirect/get). Both
branches are tested (``tests/annotator_ui/test_views.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from annotator_ui.forms import LabelForm, new_idempotency_key
from annotator_ui.markdown import render_markdown
from annotator_ui.selectors import (
    annotator_label_counts,
    campaigns_for_annotator,
    lease_with_pair,
)
from ml_worker.core.choice import Choice as AnswerChoice
from rlhf_platform.accounts.services import (
    LoginRateLimited,
    client_ip,
    login_attempt_check,
    login_failure_record,
    login_success_reset,
)
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.campaigns.selectors import campaign_progress, get_campaign_for_user
from rlhf_platform.errors import (
    BudgetExhausted,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceError,
)
from rlhf_platform.labeling.models import Choice, Lease
from rlhf_platform.labeling.selectors import (
    NothingToLabel,
    cut_off_at,
    get_label_for_annotator,
    get_lease_for_annotator,
    labeling_status,
    lease_display,
)
from rlhf_platform.labeling.services import (
    comparison_next,
    label_submit,
    label_undo,
    last_undoable_label,
    lease_renew,
    lease_skip,
)

# How often the "nothing queued" state asks again (seconds). Tests shorten it.
POLL_SECONDS = 5
PAUSED_POLL_SECONDS = 30
HOME_POLL_SECONDS = 30

# Workspace states (the ``data-state`` of ``#workspace``).
READY, LABELING, EMPTY, PAUSED, FINISHED, BUDGET, DAILY_CAP = (
    "ready",
    "labeling",
    "empty",
    "paused",
    "finished",
    "budget",
    "daily_cap",
)

# Friendlier words for the service errors an annotator meets in normal work.
_NOTICES = {
    "lease_closed": "That comparison was already answered or skipped; here is the next one.",
    "comparison_expired": "That comparison's round has closed; here is the next one.",
}


def _is_partial(request: HttpRequest) -> bool:
    """An htmx request that swaps a fragment (a history restore needs the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def annotator_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Security headers, no caching, ``Vary: HX-Request``, and login required.

    An anonymous htmx request (a poll after the session ended) gets an ``HX-Redirect`` to
    the login page instead of a login form swapped into the middle of the page.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            if request.htmx:
                target = request.htmx.current_url_abs_path or request.get_full_path()
                login = redirect_to_login(target)
                return HttpResponseClientRedirect(login["Location"])
            return redirect_to_login(request.get_full_path())
        response = view(request, *args, **kwargs)
        patch_vary_headers(response, ["HX-Request"])
        return response

    return never_cache(wrapper)


def _campaign_or_404(request: HttpRequest, campaign_id: int) -> Campaign:
    try:
        return get_campaign_for_user(request.user, campaign_id)
    except NotFound:
        raise Http404("No such campaign.") from None


def _lease_or_404(request: HttpRequest, lease_id: int) -> Lease:
    try:
        return get_lease_for_annotator(request.user, lease_id)
    except NotFound:
        raise Http404("No such lease.") from None


def _mmss(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def _timer_context(lease: Lease, *, expired: bool = False) -> dict[str, Any]:
    seconds_left = max(0, int((lease.expires_at - timezone.now()).total_seconds()))
    return {
        "lease": lease,
        "expired": expired or seconds_left == 0,
        "seconds_left": seconds_left,
        "time_left": _mmss(seconds_left),
        "lease_seconds": settings.LEASE_SECONDS,
    }


#: The answer buttons and the shortcut list: (value, key, text), from the one definition.
ANSWERS = [(c.value, c.key, c.label) for c in AnswerChoice]


def _workspace_context(
    request: HttpRequest,
    campaign: Campaign,
    *,
    lease: bool,
    errors: list[str] | None = None,
    rationale: str = "",
) -> dict[str, Any]:
    """Describe the annotator's comparison, or why there is none.

    ``lease``: lease one if the annotator holds none (``comparison_next``). Only a POST
    leases; a GET (a visit, a reload, htmx's poll) reads the live lease, or offers the
    "next pair" button when a comparison is waiting (``labeling_status``).
    """
    user = request.user
    ctx: dict[str, Any] = {
        "campaign": campaign,
        "errors": errors or [],
        "label_url": reverse("annotator_ui:label", args=[campaign.pk]),
        "next_url": reverse("annotator_ui:next", args=[campaign.pk]),
        "poll_seconds": POLL_SECONDS,
        "choices": ANSWERS,
    }
    current: Lease | None = None
    refusal: ServiceError | None = None
    try:
        if lease:
            current = lease_with_pair(
                user, comparison_next(annotator=user, campaign_id=campaign.pk).lease.pk
            )
        else:
            status = labeling_status(annotator=user, campaign_id=campaign.pk)
            current, refusal = status.lease, status.refusal
    except (NothingToLabel, BudgetExhausted, Conflict) as exc:
        refusal = exc
    except NotFound:
        # The campaign is visible (owner, admin) but the user is not one of its annotators.
        raise Http404("You do not label in this campaign.") from None
    if refusal is not None:
        _refusal_context(ctx, refusal, campaign)
    elif current is None:
        ctx["state"] = READY
    else:
        shown = lease_display(current)
        left, right = current.comparison.response_a, current.comparison.response_b
        if current.swapped:
            left, right = right, left
        ctx.update(
            cut_a=cut_off_at(left, campaign.policy_config),
            cut_b=cut_off_at(right, campaign.policy_config),
            state=LABELING,
            prompt_html=render_markdown(shown["prompt"]),
            turns=[
                {"role": str(m.get("role", "")), "html": render_markdown(str(m.get("content", "")))}
                for m in (shown["messages"] or [])
                if isinstance(m, dict)
            ],
            response_a_html=render_markdown(shown["response_a"]),
            response_b_html=render_markdown(shown["response_b"]),
            form=LabelForm(
                initial={"idempotency_key": new_idempotency_key(current), "rationale": rationale}
            ),
            **_timer_context(current),
        )
    ctx["undo_label"] = last_undoable_label(annotator=user, campaign_id=campaign.pk)
    ctx["undo_seconds"] = settings.LABEL_UNDO_SECONDS
    ctx["counts"] = annotator_label_counts(annotator=user, campaign_id=campaign.pk)
    ctx["progress"] = campaign_progress(campaign)
    ctx["budget"] = budget_status(campaign_id=campaign.pk)
    return ctx


def _refusal_context(ctx: dict[str, Any], exc: ServiceError, campaign: Campaign) -> None:
    """The state that says why the annotator has no comparison now."""
    if isinstance(exc, NothingToLabel):
        ctx.update(state=EMPTY, notice=exc.message)
    elif isinstance(exc, BudgetExhausted):
        ctx.update(state=DAILY_CAP if exc.code == "daily_cap_reached" else BUDGET)
        ctx["notice"] = exc.message
    elif isinstance(exc, Conflict) and exc.code == "campaign_not_running":
        campaign.refresh_from_db(fields=["state"])
        finished = campaign.state == CampaignState.FINISHED
        ctx.update(state=FINISHED if finished else PAUSED, notice=exc.message)
        if not finished:
            ctx["poll_seconds"] = PAUSED_POLL_SECONDS
    else:
        raise exc


def _render_workspace(
    request: HttpRequest, campaign: Campaign, *, lease: bool, status: int = 200, **kwargs: Any
) -> HttpResponse:
    ctx = _workspace_context(request, campaign, lease=lease, **kwargs)
    if _is_partial(request):
        return render(request, "annotator_ui/_workspace.html", ctx, status=status)
    ctx["guidelines_html"] = render_markdown(campaign.guidelines) if campaign.guidelines else ""
    return render(request, "annotator_ui/label.html", ctx, status=status)


def _next(request: HttpRequest, campaign: Campaign) -> HttpResponse:
    """After a POST (an answer, a skip, an undo, "next pair"): lease the next comparison.
    htmx swaps it in; a plain post leases it and redirects to the page, whose GET shows it
    (or says why there is none)."""
    if _is_partial(request):
        return _render_workspace(request, campaign, lease=True)
    try:
        comparison_next(annotator=request.user, campaign_id=campaign.pk)
    except NothingToLabel:
        pass  # the page's GET says so
    except NotFound:
        raise Http404("You do not label in this campaign.") from None
    except ServiceError:
        pass  # not running, budget spent: the page's GET says why
    return redirect("annotator_ui:label", campaign.pk, permanent=False)


def _time_taken_ms(form_value: int | None, lease: Lease) -> int:
    """The client's measure when it sent one (JavaScript), else the lease's age."""
    if form_value is not None:
        return form_value
    return max(0, int((timezone.now() - lease.created_at) / dt.timedelta(milliseconds=1)))


# --- Pages ---------------------------------------------------------------------------------


@annotator_view
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The campaigns the annotator labels in, with their progress."""
    ctx = {"campaigns": list(campaigns_for_annotator(request.user)), "poll": HOME_POLL_SECONDS}
    if _is_partial(request):
        return render(request, "annotator_ui/_campaign_list.html", ctx)
    return render(request, "annotator_ui/home.html", ctx)


@annotator_view
@require_GET
def label_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The labeling page: the annotator's live lease, a "next pair" button when a comparison
    is waiting, or why there is none. It leases nothing: a reload shows the same lease, and
    htmx polls this URL from the "nothing queued" and "paused" states (every few seconds,
    so a GET that leased would hand out comparisons to a page nobody looks at)."""
    campaign = _campaign_or_404(request, campaign_id)
    return _render_workspace(request, campaign, lease=False)


@annotator_view
@require_POST
def label_next_view(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Lease the next comparison (the "next pair" button)."""
    campaign = _campaign_or_404(request, campaign_id)
    return _next(request, campaign)


@annotator_view
@require_POST
def label_submit_view(request: HttpRequest, lease_id: int) -> HttpResponse:
    lease = _lease_or_404(request, lease_id)
    campaign = _campaign_or_404(request, lease.campaign_id)
    form = LabelForm(request.POST)
    if not form.is_valid():
        errors = [f"{form.fields[f].label or f}: {e}" for f, es in form.errors.items() for e in es]
        return _render_workspace(
            request,
            campaign,
            lease=True,
            status=400,
            errors=errors,
            # Never echo more than the limit back: a 1 MB rationale made an 11 MB page.
            rationale=request.POST.get("rationale", "")[: settings.RATIONALE_MAX_LENGTH],
        )
    data = form.cleaned_data
    try:
        label, created = label_submit(
            annotator=request.user,
            lease_id=lease.pk,
            choice=data["choice"],
            idempotency_key=data["idempotency_key"],
            rationale=data["rationale"],
            time_taken_ms=_time_taken_ms(data["time_taken_ms"], lease),
        )
    except NotFound:
        raise Http404("No such lease.") from None
    except InvalidInput as exc:
        return _render_workspace(
            request,
            campaign,
            lease=True,
            status=400,
            errors=[exc.message],
            rationale=data["rationale"][: settings.RATIONALE_MAX_LENGTH],
        )
    except ServiceError as exc:
        # Expired lease, already answered, round closed, budget spent: say so and move on;
        # the next state (a fresh comparison, or "budget finished") explains the rest.
        messages.warning(request, _NOTICES.get(exc.code, exc.message))
    else:
        shown = Choice(data["choice"]).label
        if created:
            messages.success(request, f"Saved: {shown}.")
        else:
            messages.info(request, f"Already saved: {shown}.")
    return _next(request, campaign)


@annotator_view
@require_POST
def label_undo_view(request: HttpRequest, label_id: int) -> HttpResponse:
    """Take back the annotator's last label: its pair comes back to be answered again."""
    try:
        label = get_label_for_annotator(request.user, label_id)
    except NotFound:
        raise Http404("No such label.") from None
    campaign = _campaign_or_404(request, label.campaign_id)
    try:
        label_undo(annotator=request.user, label_id=label.pk)
    except NotFound:
        raise Http404("No such label.") from None
    except ServiceError as exc:
        messages.warning(request, exc.message)
    else:
        messages.info(request, "Label undone: answer this comparison again.")
    return _next(request, campaign)


@annotator_view
@require_POST
def lease_skip_view(request: HttpRequest, lease_id: int) -> HttpResponse:
    lease = _lease_or_404(request, lease_id)
    campaign = _campaign_or_404(request, lease.campaign_id)
    try:
        lease_skip(annotator=request.user, lease_id=lease.pk)
    except NotFound:
        raise Http404("No such lease.") from None
    except ServiceError as exc:
        messages.warning(request, _NOTICES.get(exc.code, exc.message))
    else:
        messages.info(request, "Skipped. You will not be shown that comparison again.")
    return _next(request, campaign)


@annotator_view
@require_POST
def lease_renew_view(request: HttpRequest, lease_id: int) -> HttpResponse:
    """More time on a lease. htmx (the page's countdown) gets the new timer fragment; a
    plain form post returns to the labeling page."""
    lease = _lease_or_404(request, lease_id)
    try:
        lease = lease_renew(annotator=request.user, lease_id=lease.pk)
    except NotFound:
        raise Http404("No such lease.") from None
    except ServiceError as exc:
        if _is_partial(request):
            return render(
                request,
                "annotator_ui/_timer.html",
                {**_timer_context(lease, expired=True), "notice": exc.message},
                status=exc.status,
            )
        messages.warning(request, exc.message)
        return redirect("annotator_ui:label", lease.campaign_id)
    if _is_partial(request):
        return render(request, "annotator_ui/_timer.html", _timer_context(lease))
    messages.info(request, f"You have {_mmss(_timer_context(lease)['seconds_left'])} more.")
    return redirect("annotator_ui:label", lease.campaign_id)


# --- Authentication ------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    """Django's login page, with the login rate limits of the API token endpoint
    (:mod:`rlhf_platform.accounts.services`): once they are reached the page answers 429
    and says how long to wait, without checking the password."""

    template_name = "annotator_ui/login.html"
    redirect_authenticated_user = True

    def _who(self) -> tuple[str, str]:
        return self.request.POST.get("username", "")[:150], client_ip(self.request)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username, ip = self._who()
        try:
            login_attempt_check(username=username, ip=ip)
        except LoginRateLimited as exc:
            form = self.form_class(request, initial={"username": username})
            response = self.render_to_response(
                self.get_context_data(form=form, rate_limited=exc.message), status=exc.status
            )
            response["Retry-After"] = str(exc.retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        username, ip = self._who()
        login_failure_record(username=username, ip=ip)
        return super().form_invalid(form)

    def form_valid(self, form):
        username, ip = self._who()
        login_success_reset(username=username, ip=ip)
        return super().form_valid(form)

    def get_default_redirect_url(self) -> str:
        """Without a ``next``: researchers and admins land on the research pages, annotators
        on the campaigns they label in."""
        if self.request.user.is_authenticated and self.request.user.is_researcher:
            return reverse("insights:research")
        return super().get_default_redirect_url()


login_view = LoginView.as_view()
logout_view = auth_views.LogoutView.as_view()
