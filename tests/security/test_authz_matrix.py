"""The authorization matrix: every API operation and every page against every role.

The list of API operations is not typed in by hand: it comes from the OpenAPI schema (and
the URL resolver, for the API routes the schema leaves out), and the pages come from the URL
resolver. A new endpoint or page that is not in the matrix fails
``test_every_api_operation_is_in_the_matrix`` / ``test_every_page_is_in_the_matrix``
until someone decides who may use it.

For every (operation, role) the test sends a request that would succeed for an allowed role
and checks the outcome: ``ok`` (2xx, or for a page any response but a redirect to the login
page), ``401``, ``403``, ``404``, or ``login`` (a page redirecting an anonymous visitor to
the login page). Every denial must carry no data (an API error body is ``{code, message}``
only, and no body contains :data:`~tests.security.world.SENTINEL`, which every text of the
target campaign carries). And for the members of another campaign, an existing-but-foreign
id must get exactly the same answer as an id that does not exist, so ids cannot be probed.

Each operation is one test; its roles run one after the other in savepoints rolled back
after each, so a write by one role (a state change, a label) does not change what the next
one sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.security.world import OUTSIDERS, ROLES, SENTINEL, World, build_world

pytestmark = pytest.mark.django_db

MISSING_ID = 987_654_321

# Shorthands for a row of the matrix, in the order of ROLES:
# anonymous, annotator, owner, researcher_member, admin, outsider_annotator, outsider_researcher
SEE = ("401", "ok", "ok", "ok", "ok", "404", "404")  # members, owner, admin
MANAGE = ("401", "403", "ok", "403", "ok", "404", "404")  # owner and admin
LABEL = ("401", "ok", "404", "ok", "404", "404", "404")  # members only (the owner labels not)
OWN_LEASE = ("401", "ok", "404", "404", "404", "404", "404")  # the lease's annotator only
RESEARCH = ("401", "403", "ok", "ok", "ok", "403", "404")  # researchers who see it

PAGE_SEE = ("login", "403", "ok", "ok", "ok", "403", "404")  # researcher pages
PAGE_BUDGET = ("login", "403", "ok", "403", "ok", "403", "404")  # owner and admin
PAGE_LABEL = ("login", "ok", "404", "ok", "404", "404", "404")
PAGE_OWN_LEASE = ("login", "ok", "404", "404", "404", "404", "404")


def row(outcomes: tuple[str, ...]) -> dict[str, str]:
    assert len(outcomes) == len(ROLES)
    return dict(zip(ROLES, outcomes, strict=True))


@dataclass
class Case:
    """How to call one operation, and who may."""

    expect: dict[str, str]
    # world -> (path, keyword arguments of the client call)
    request: Callable[[World], tuple[str, dict[str, Any]]]
    # the object the path names, for the enumeration check: "campaign", "lease", "round"
    target: str | None = "campaign"
    notes: list[str] = field(default_factory=list)


def _json(data: dict) -> dict[str, Any]:
    return {"data": data, "format": "json"}


def _pairs_file() -> dict[str, Any]:
    content = b'{"prompt": "p", "response_a": "a", "response_b": "b"}\n'
    upload = SimpleUploadedFile("pairs.jsonl", content, content_type="application/x-ndjson")
    return {"data": {"file": upload}, "format": "multipart"}


def _c(w: World) -> int:
    return w.campaign.pk


def _label(w: World):
    """The world's lease, labeled by its annotator (the same label on every call)."""
    from rlhf_platform.labeling.services import label_submit

    label, _ = label_submit(
        annotator=w.lease.annotator, lease_id=w.lease.pk, choice="A", idempotency_key="matrix"
    )
    return label


def _invite(w: World):
    from django.utils import timezone

    from rlhf_platform.campaigns.models import Invite

    invite, _ = Invite.objects.get_or_create(
        token_hash="x" * 64,
        defaults={
            "campaign": w.campaign,
            "created_by": w.campaign.owner,
            "expires_at": timezone.now(),
        },
    )
    return invite


def _prompt_file() -> dict[str, Any]:
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "p"}\n')
    return {"method": "post", "data": {"kind": "prompts", "do": "preview", "file": upload}}


# --- The API ------------------------------------------------------------------------------

API: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/auth/token/"): Case(
        row(("ok",) * 7),
        lambda w: ("/api/v1/auth/token/", _json({"username": "anna", "password": "pw-anna"})),
        target=None,
    ),
    ("GET", "/api/v1/campaigns/"): Case(
        row(("401",) + ("ok",) * 6), lambda w: ("/api/v1/campaigns/", {}), target=None
    ),
    ("POST", "/api/v1/campaigns/"): Case(
        row(("401", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/api/v1/campaigns/", _json({"name": "A new one"})),
        target=None,
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/"): Case(
        row(SEE), lambda w: (f"/api/v1/campaigns/{_c(w)}/", {})
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/state/"): Case(
        row(MANAGE), lambda w: (f"/api/v1/campaigns/{_c(w)}/state/", _json({"action": "pause"}))
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/members/"): Case(
        row(MANAGE),
        lambda w: (f"/api/v1/campaigns/{_c(w)}/members/", _json({"username": "olga"})),
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/prompts/import/"): Case(
        row(MANAGE),
        lambda w: (
            f"/api/v1/campaigns/{_c(w)}/prompts/import/",
            _json({"format": "jsonl", "content": '{"prompt": "more"}\n'}),
        ),
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/progress/"): Case(
        row(SEE), lambda w: (f"/api/v1/campaigns/{_c(w)}/progress/", {})
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/rounds/"): Case(
        row(SEE), lambda w: (f"/api/v1/campaigns/{_c(w)}/rounds/", {})
    ),
    ("POST", "/api/v1/rounds/{round_id}/retry/"): Case(
        row(MANAGE), lambda w: (f"/api/v1/rounds/{w.failed_round.pk}/retry/", {}), target="round"
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/next/"): Case(
        row(LABEL), lambda w: (f"/api/v1/campaigns/{_c(w)}/next/", {})
    ),
    ("POST", "/api/v1/leases/{lease_id}/label/"): Case(
        row(OWN_LEASE),
        lambda w: (
            f"/api/v1/leases/{w.lease.pk}/label/",
            _json({"choice": "A", "idempotency_key": "k-1"}),
        ),
        target="lease",
    ),
    ("POST", "/api/v1/labels/{label_id}/undo/"): Case(
        row(OWN_LEASE),
        lambda w: (f"/api/v1/labels/{_label(w).pk}/undo/", {}),
        target=None,
        notes=["only the label's own annotator; another's label is reported as not found"],
    ),
    ("POST", "/api/v1/leases/{lease_id}/skip/"): Case(
        row(OWN_LEASE), lambda w: (f"/api/v1/leases/{w.lease.pk}/skip/", {}), target="lease"
    ),
    ("POST", "/api/v1/leases/{lease_id}/renew/"): Case(
        row(OWN_LEASE), lambda w: (f"/api/v1/leases/{w.lease.pk}/renew/", {}), target="lease"
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/exports/preferences/"): Case(
        row(RESEARCH),
        lambda w: (f"/api/v1/campaigns/{_c(w)}/exports/preferences/", {}),
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/exports/labels/"): Case(
        row(RESEARCH),
        lambda w: (f"/api/v1/campaigns/{_c(w)}/exports/labels/?file_format=csv", {}),
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/imports/pairs/"): Case(
        row(MANAGE), lambda w: (f"/api/v1/campaigns/{_c(w)}/imports/pairs/", _pairs_file())
    ),
    # Raters (issue 20): a rater's quality is for the campaign's owner and admins only.
    ("GET", "/api/v1/campaigns/{campaign_id}/raters/"): Case(
        row(MANAGE), lambda w: (f"/api/v1/campaigns/{_c(w)}/raters/", {})
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/raters/exclusion/"): Case(
        row(MANAGE),
        lambda w: (
            f"/api/v1/campaigns/{_c(w)}/raters/exclusion/",
            _json({"rater": f"user:{_label(w).annotator_id}", "excluded": True}),
        ),
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/raters/gold/"): Case(
        row(MANAGE), lambda w: (f"/api/v1/campaigns/{_c(w)}/raters/gold/", _json({"rate": 0.1}))
    ),
}

# API routes the schema leaves out on purpose, with who may use them.
API_OUTSIDE_SCHEMA = {
    "api/schema/": "public: the OpenAPI document (no data, same for everyone)",
    "api/docs/": "public: Swagger UI over the schema",
    "api/v1/^([\\s\\S]*/)?$": "the JSON 404 for unknown API paths",
}


# --- The pages ----------------------------------------------------------------------------


def _form(data: dict) -> dict[str, Any]:
    return {"data": data}


PAGES: dict[str, Case] = {
    "login": Case(row(("ok",) * 7), lambda w: ("/login/", {}), target=None),
    # Logging out (POST) always ends on the login page.
    "logout": Case(row(("login",) * 7), lambda w: ("/logout/", {"method": "post"}), target=None),
    "annotator_ui:home": Case(row(("login",) + ("ok",) * 6), lambda w: ("/", {}), target=None),
    "annotator_ui:label": Case(row(PAGE_LABEL), lambda w: (f"/campaigns/{_c(w)}/label/", {})),
    "annotator_ui:next": Case(
        row(PAGE_LABEL),
        lambda w: (f"/campaigns/{_c(w)}/label/next/", {"method": "post"}),
        notes=["leases the next comparison (the page's GET leases nothing)"],
    ),
    "annotator_ui:submit": Case(
        row(PAGE_OWN_LEASE),
        lambda w: (
            f"/leases/{w.lease.pk}/label/",
            {"method": "post", **_form({"choice": "A", "idempotency_key": "ui-k-1"})},
        ),
        target="lease",
    ),
    "annotator_ui:skip": Case(
        row(PAGE_OWN_LEASE),
        lambda w: (f"/leases/{w.lease.pk}/skip/", {"method": "post"}),
        target="lease",
    ),
    "annotator_ui:undo": Case(
        row(PAGE_OWN_LEASE),
        lambda w: (f"/labels/{_label(w).pk}/undo/", {"method": "post"}),
        target=None,
        notes=["only the label's own annotator; another's label is reported as not found"],
    ),
    "annotator_ui:renew": Case(
        row(PAGE_OWN_LEASE),
        lambda w: (f"/leases/{w.lease.pk}/renew/", {"method": "post"}),
        target="lease",
    ),
    "insights:research": Case(
        row(("login", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/research/", {}),
        target=None,
    ),
    "insights:compare": Case(
        row(PAGE_SEE), lambda w: (f"/research/compare/?c={_c(w)}", {}), target="query"
    ),
    "insights:compare-csv": Case(
        row(PAGE_SEE),
        lambda w: (f"/research/compare/win-rate.csv?c={_c(w)}", {}),
        target="query",
    ),
    "insights:campaign": Case(row(PAGE_SEE), lambda w: (f"/research/campaigns/{_c(w)}/", {})),
    "insights:campaign-csv": Case(
        row(PAGE_SEE), lambda w: (f"/research/campaigns/{_c(w)}/rounds.csv", {})
    ),
    "insights:agreement": Case(
        row(PAGE_SEE), lambda w: (f"/research/campaigns/{_c(w)}/agreement/", {})
    ),
    "insights:agreement-csv": Case(
        row(PAGE_SEE),
        lambda w: (f"/research/campaigns/{_c(w)}/agreement/disagreements.csv", {}),
    ),
    "insights:budgets": Case(
        row(("login", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/budgets/", {}),
        target=None,
    ),
    "insights:budget": Case(row(PAGE_BUDGET), lambda w: (f"/budgets/campaigns/{_c(w)}/", {})),
    "insights:budget-csv": Case(
        row(PAGE_BUDGET), lambda w: (f"/budgets/campaigns/{_c(w)}/ledger.csv", {})
    ),
    "insights:budget-state": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/budgets/campaigns/{_c(w)}/state/",
            {"method": "post", **_form({"action": "pause"})},
        ),
    ),
    "insights:budget-caps": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/budgets/campaigns/{_c(w)}/caps/",
            {"method": "post", **_form({"label_cap": "400"})},
        ),
    ),
    "insights:campaign-new": Case(
        row(("login", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/research/campaigns/new/", {}),
        target=None,
    ),
    # Trying a judge queues one question on a worker; researchers and admins only.
    "insights:judge-try": Case(
        row(("login", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/research/judges/try/", {"method": "post", **_form({"judge_kind": "oracle"})}),
        target=None,
    ),
    # A trial is its creator's only: anyone else gets 404 (here: no trial of theirs).
    "insights:judge-trial": Case(
        row(("login", "403", "404", "404", "404", "403", "404")),
        lambda w: (f"/research/judges/trials/{MISSING_ID}/", {}),
        target=None,
    ),
    "insights:manage": Case(
        row(PAGE_BUDGET), lambda w: (f"/research/campaigns/{_c(w)}/manage/", {})
    ),
    "insights:campaign-state": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/state/",
            {"method": "post", **_form({"action": "pause", "confirmed": "1"})},
        ),
    ),
    "insights:campaign-import": Case(
        row(PAGE_BUDGET), lambda w: (f"/research/campaigns/{_c(w)}/import/", _prompt_file())
    ),
    "insights:members-add": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/members/",
            {"method": "post", **_form({"username": "olga"})},
        ),
    ),
    "insights:members-remove": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/members/remove/",
            {"method": "post", **_form({"username": "anna"})},
        ),
    ),
    "insights:invite-new": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/invites/",
            {"method": "post", **_form({"hours": "24"})},
        ),
    ),
    "insights:invite-revoke": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/invites/{_invite(w).pk}/revoke/",
            {"method": "post"},
        ),
    ),
    "insights:labels": Case(row(PAGE_SEE), lambda w: (f"/research/campaigns/{_c(w)}/labels/", {})),
    "insights:label-flag": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/labels/{_label(w).pk}/flag/",
            {"method": "post", **_form({"flagged": "1"})},
        ),
    ),
    "raters:campaign": Case(
        row(PAGE_BUDGET), lambda w: (f"/research/campaigns/{_c(w)}/raters/", {})
    ),
    "raters:exclusion": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/raters/exclusion/",
            {
                "method": "post",
                **_form({"rater": f"user:{_label(w).annotator_id}", "excluded": "1"}),
            },
        ),
    ),
    "raters:gold": Case(
        row(PAGE_BUDGET),
        lambda w: (
            f"/research/campaigns/{_c(w)}/raters/gold/",
            {"method": "post", **_form({"rate": "0.1"})},
        ),
    ),
    # Across campaigns: admins see every campaign, researchers those they own.
    "raters:admin": Case(
        row(("login", "403", "ok", "ok", "ok", "403", "ok")),
        lambda w: ("/research/raters/", {}),
        target=None,
    ),
    # Any signed-in user may open an invite link (the token is the secret).
    "insights:invite": Case(
        row(("login",) + ("ok",) * 6), lambda w: ("/invites/some-token/", {}), target=None
    ),
    # Django's admin: staff only, checked by the AdminSite for every one of its views.
    "admin:index": Case(
        row(("login", "login", "login", "login", "ok", "login", "login")),
        lambda w: ("/admin/", {}),
        target=None,
    ),
    "admin:campaigns_campaign_changelist": Case(
        row(("login", "login", "login", "login", "ok", "login", "login")),
        lambda w: ("/admin/campaigns/campaign/", {}),
        target=None,
    ),
}


# --- Discovery ----------------------------------------------------------------------------


def _schema_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def _routes(patterns, prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    """(route, name) of every URL pattern, walking includes."""
    out = []
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            out += _routes(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            out.append((prefix + str(p.pattern), f"{namespace}{p.name}" if p.name else ""))
    return out


def _schema_path(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_api_operation_is_in_the_matrix():
    operations = _schema_operations()
    missing = sorted(operations - set(API))
    stale = sorted(set(API) - operations)
    assert not missing, f"API operations with no row in the authorization matrix: {missing}"
    assert not stale, f"rows for operations the API no longer has: {stale}"


def test_every_api_route_is_in_the_schema_or_listed_outside_it():
    schema_paths = {path for _, path in _schema_operations()}
    routes = [route for route, _ in _routes(get_resolver().url_patterns)]
    api_routes = [r for r in routes if r.startswith("api/")]
    unlisted = [
        r for r in api_routes if _schema_path(r) not in schema_paths and r not in API_OUTSIDE_SCHEMA
    ]
    assert not unlisted, f"API routes neither in the schema nor in API_OUTSIDE_SCHEMA: {unlisted}"


def test_every_page_is_in_the_matrix():
    names = {
        name
        for route, name in _routes(get_resolver().url_patterns)
        if not route.startswith(("api/", "admin/"))
    }
    missing = sorted(names - set(PAGES))
    assert not missing, f"pages with no row in the authorization matrix: {missing}"
    assert "" not in names, "every page needs a URL name to be listed in the matrix"


# --- Calling ------------------------------------------------------------------------------


def _api_client(world: World, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[role]}")
    return client


def _page_client(world: World, role: str) -> Client:
    client = Client()
    user = world.user(role)
    if user is not None:
        client.force_login(user)
    return client


def _call(client, path: str, kwargs: dict[str, Any], default_method: str):
    kwargs = dict(kwargs)
    method = kwargs.pop("method", default_method).lower()
    return getattr(client, method)(path, **kwargs)


def _api_outcome(response) -> str:
    return "ok" if 200 <= response.status_code < 300 else str(response.status_code)


def _page_outcome(response) -> str:
    if response.status_code == 302 and response["Location"].startswith(
        ("/login/", "/admin/login/")
    ):
        return "login"
    if 200 <= response.status_code < 400:
        return "ok"
    return str(response.status_code)


def _swap_target(path: str, world: World, target: str | None, new_id: int) -> str:
    old = {
        "campaign": world.campaign.pk,
        "query": world.campaign.pk,
        "lease": world.lease.pk,
        "round": world.failed_round.pk,
    }[target]
    if target == "query":
        return path.replace(f"c={old}", f"c={new_id}")
    return re.sub(rf"/{old}/", f"/{new_id}/", path, count=1).replace(f"/{old}.", f"/{new_id}.")


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _check_denial(response, *, api: bool) -> list[str]:
    problems = []
    body = _body(response)
    if SENTINEL.encode() in body:
        problems.append("the denial's body carries data of the campaign")
    if api:
        data = response.json()
        if set(data) - {"code", "message"}:
            problems.append(f"the denial's body has more than code and message: {sorted(data)}")
    return problems


def _normalized(response, ids: tuple[int, ...]) -> tuple[int, str]:
    text = _body(response).decode(errors="replace")
    for i in ids:
        text = text.replace(str(i), "<id>")
    # Pages carry a fresh CSRF token each time.
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)
    text = re.sub(r'"X-CSRFToken": "[^"]+"', "", text)
    return response.status_code, text


def _run(case: Case, world: World, *, api: bool, method: str = "get") -> list[str]:
    problems = []
    for role in ROLES:
        with transaction.atomic():
            client = _api_client(world, role) if api else _page_client(world, role)
            path, kwargs = case.request(world)
            response = _call(client, path, kwargs, method)
            outcome = _api_outcome(response) if api else _page_outcome(response)
            expected = case.expect[role]
            if outcome != expected:
                problems.append(
                    f"{role}: expected {expected}, got {response.status_code} "
                    f"{_body(response)[:200]!r}"
                )
            elif outcome != "ok" and role != "anonymous":
                problems += [f"{role}: {p}" for p in _check_denial(response, api=api)]
            if case.target and outcome != "ok" and (role in OUTSIDERS or case.target == "lease"):
                # Same question about an id that does not exist: the same answer.
                sid = transaction.savepoint()
                missing_path = _swap_target(path, world, case.target, MISSING_ID)
                path2, kwargs2 = case.request(world)
                other = _call(client, missing_path, kwargs2, method)
                transaction.savepoint_rollback(sid)
                ids = (world.campaign.pk, world.lease.pk, world.failed_round.pk, MISSING_ID)
                if _normalized(response, ids) != _normalized(other, ids):
                    problems.append(
                        f"{role}: an existing id is answered {response.status_code} "
                        f"{_body(response)[:120]!r} but a missing one {other.status_code} "
                        f"{_body(other)[:120]!r}: ids can be probed"
                    )
            transaction.set_rollback(True)
    return problems


@pytest.mark.parametrize(("method", "path"), sorted(API), ids=lambda v: v)
def test_api_operation_against_every_role(method, path):
    world = build_world()
    problems = _run(API[(method, path)], world, api=True, method=method)
    assert not problems, f"{method} {path}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_against_every_role(name):
    world = build_world()
    problems = _run(PAGES[name], world, api=False)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def test_lists_show_outsiders_nothing_of_the_campaign():
    world = build_world()
    for role in ROLES[1:]:
        listed = _api_client(world, role).get("/api/v1/campaigns/").json()["results"]
        ids = {c["id"] for c in listed}
        assert (world.campaign.pk in ids) == (role not in OUTSIDERS), role
        for path in ("/", "/research/", "/budgets/"):
            response = _page_client(world, role).get(path)
            if role in OUTSIDERS:
                assert SENTINEL.encode() not in response.content, (role, path)
