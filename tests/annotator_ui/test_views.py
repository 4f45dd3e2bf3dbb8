"""The annotator pages, through Django's test client: each view in its plain branch and its
htmx branch (header ``HX-Request: true``), access rules, CSRF, headers, no-JS form posts,
idempotent submits and bounded query counts. Runs on the real database."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotator_ui.security import CONTENT_SECURITY_POLICY
from rlhf_platform.campaigns.services import campaign_set_state, comparisons_import_pairs
from rlhf_platform.labeling.models import Choice, Label, Lease, LeaseState
from rlhf_platform.labeling.services import comparison_next, label_submit
from rlhf_platform.rounds.models import Round, RoundState
from tests.conftest import make_campaign

HX = {"HX-Request": "true"}


def label_url(campaign) -> str:
    return reverse("annotator_ui:label", args=[campaign.pk])


def next_url(campaign) -> str:
    return reverse("annotator_ui:next", args=[campaign.pk])


def open_pair(client, campaign, headers=None):
    """Press "next pair" (the POST that leases), then load the page (the GET that shows the
    lease): what an annotator does on arriving at the labeling page."""
    client.post(next_url(campaign))
    return client.get(label_url(campaign), headers=headers or {})


def submit_url(lease) -> str:
    return reverse("annotator_ui:submit", args=[lease.pk])


def active_lease(user, campaign) -> Lease:
    return Lease.objects.get(annotator=user, campaign=campaign, state=LeaseState.ACTIVE)


def form_key(html: str) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert match, "the labeling form carries a hidden idempotency key"
    return match.group(1)


def shown_texts(lease: Lease) -> tuple[str, str]:
    """(left, right) response texts as this lease shows them."""
    c = lease.comparison
    a, b = c.response_a.text, c.response_b.text
    return (b, a) if lease.swapped else (a, b)


@pytest.fixture
def anna(client, annotator):
    client.force_login(annotator)
    return client


# --- Anonymous ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["annotator_ui:home", "annotator_ui:label"])
def test_it_redirects_anonymous_visitors_to_login(client, campaign, name):
    url = reverse(name, args=[campaign.pk] if name.endswith("label") else [])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.django_db
def test_it_tells_htmx_to_redirect_anonymous_polls_to_login(client, campaign):
    response = client.get(
        label_url(campaign), headers={**HX, "HX-Current-URL": "http://testserver/x/"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(reverse("login") + "?next=")
    assert b"<form" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["annotator_ui:submit", "annotator_ui:skip", "annotator_ui:renew"])
def test_it_refuses_anonymous_posts(client, campaign, annotator, name):
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    response = client.post(reverse(name, args=[lease.pk]), {"choice": "A", "idempotency_key": "k"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Label.objects.exists()


# --- Login and logout ----------------------------------------------------------------------


@pytest.mark.django_db
def test_login_page_logs_in_and_out(annotator):
    client = Client(enforce_csrf_checks=True)
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'<label for="id_username">' in page.content
    token = client.cookies["csrftoken"].value
    response = client.post(
        reverse("login"),
        {"username": "anna", "password": "pw-anna", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("logout"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_login_rejects_a_wrong_password(client, annotator):
    response = client.post(reverse("login"), {"username": "anna", "password": "nope"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content


# --- Home ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_home_lists_my_campaigns_with_progress(anna, annotator, campaign, foreign_campaign):
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="k1")
    Round.objects.create(campaign=campaign, index=3)
    response = anna.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    assert campaign.name in html and label_url(campaign) in html
    assert foreign_campaign.name not in html
    assert "<dt>Your labels today</dt><dd>1</dd>" in html
    assert "<dt>Your labels in total</dt><dd>1</dd>" in html
    assert "<dt>Round</dt><dd>3</dd>" in html
    assert "<dt>Comparisons waiting</dt><dd>4</dd>" in html


@pytest.mark.django_db
def test_home_htmx_returns_the_list_fragment(anna, campaign):
    response = anna.get("/", headers=HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="campaign-list"' in html
    assert campaign.name in html
    assert "HX-Request" in response["Vary"]


@pytest.mark.django_db
def test_home_says_so_when_i_am_on_no_campaign(client, outsider):
    client.force_login(outsider)
    assert b"You are not on any campaign yet" in client.get("/").content


@pytest.mark.django_db
def test_home_query_count_does_not_grow_with_campaigns(
    anna, annotator, researcher, django_assert_max_num_queries
):
    for i in range(6):
        make_campaign(researcher, name=f"c{i}", pairs=2, members=(annotator,))
    with django_assert_max_num_queries(4):
        anna.get("/")


# --- Labeling page: plain ------------------------------------------------------------------


@pytest.mark.django_db
def test_label_page_shows_the_pair_in_the_lease_order(anna, annotator, campaign):
    response = open_pair(anna, campaign)
    html = response.content.decode()
    assert response.status_code == 200 and "<html" in html
    lease = active_lease(annotator, campaign)
    left, right = shown_texts(lease)
    assert html.index(left) < html.index(right)
    assert (
        html.index("Response A") < html.index(left) < html.index("Response B") < html.index(right)
    )
    assert lease.comparison.prompt.text in html
    assert form_key(html).startswith(f"ui-{lease.pk}-")
    for key, text in [("1", "A is better"), ("2", "B is better"), ("3", "Tie"), ("0", "Both bad")]:
        assert f'aria-keyshortcuts="{key}"' in html and text in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<label for="id_rationale">' in html


@pytest.mark.django_db
def test_label_page_htmx_returns_the_workspace_fragment(anna, annotator, campaign):
    response = open_pair(anna, campaign, headers=HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="workspace"' in html
    assert active_lease(annotator, campaign).comparison.prompt.text in html
    assert "Keyboard shortcuts" not in html  # the page chrome is not repeated


@pytest.mark.django_db
def test_label_page_history_restore_gets_the_whole_page(anna, campaign):
    response = anna.get(label_url(campaign), headers={**HX, "HX-History-Restore-Request": "true"})
    assert b"<html" in response.content


@pytest.mark.django_db
def test_reload_serves_the_same_lease_and_order(anna, annotator, campaign):
    first = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    second = anna.get(label_url(campaign)).content.decode()
    assert Lease.objects.filter(annotator=annotator).count() == 1
    left, right = shown_texts(lease)
    for html in (first, second):
        assert f'data-lease-id="{lease.pk}"' in html
        assert html.index(left) < html.index(right)


@pytest.mark.django_db
def test_label_page_shows_round_budget_and_counts(anna, annotator, researcher):
    campaign = make_campaign(researcher, name="capped", members=(annotator,), label_cap=10)
    Round.objects.create(campaign=campaign, index=0, state=RoundState.DONE)
    Round.objects.create(campaign=campaign, index=1)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="B", idempotency_key="k")
    html = anna.get(label_url(campaign)).content.decode()
    assert '<dd data-stat="today">1</dd>' in html
    assert '<dd data-stat="total">1</dd>' in html
    assert '<dd data-stat="round">1</dd>' in html
    assert '<dd data-stat="budget">9 labels' in html
    assert '<progress id="campaign-progress" max="5" value="1">' in html


@pytest.mark.django_db
def test_label_page_renders_guidelines_and_chat_history_sanitized(anna, annotator, researcher):
    campaign = make_campaign(researcher, name="chat", pairs=0, members=(annotator,))
    campaign.guidelines = "Prefer **honest** answers. <script>alert(1)</script>"
    campaign.save()
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {
                "prompt": "Hi",
                "response_a": "```python\ndef f():\n    return 1\n```",
                "response_b": "plain",
            }
        ],
    )
    # The pair importer keeps prompt text only; chat history comes with generated rounds.
    campaign.prompts.update(
        messages=[
            {"role": "user", "content": "What is `x`?"},
            {"role": "assistant", "content": "A variable."},
            {"role": "user", "content": "Show code"},
        ]
    )
    html = open_pair(anna, campaign).content.decode()
    assert "<strong>honest</strong>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "<code>x</code>" in html and "A variable." in html
    assert "<pre><code>def f():\n    return 1\n</code></pre>" in html


@pytest.mark.django_db
def test_model_output_is_rendered_as_inert_text(anna, annotator, researcher):
    campaign = make_campaign(researcher, name="xss", pairs=0, members=(annotator,))
    payload = (
        '<script>window.__pwned=1</script>\n\n<img src=x onerror="window.__pwned=1">\n\n'
        '[click me](javascript:window.__pwned=1) <a href="javascript:alert(1)">raw</a>\n\n'
        '<div hx-get="/logout/" hx-trigger="load">htmx</div>'
    )
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {"prompt": "p <b onmouseover=x>", "response_a": payload, "response_b": payload + "!"}
        ],
    )
    html = open_pair(anna, campaign).content.decode()
    body = html[html.index('id="response-a"') :]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    assert "<script>window" not in html
    assert "<img" not in html
    assert not re.search(r"<a\s[^>]*href=\"?javascript", html, re.IGNORECASE)
    assert "<div hx-get" not in html and "<b onmouseover" not in html


# --- Labeling page: states -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_nothing_queued_state_polls(anna, annotator, researcher, headers):
    campaign = make_campaign(researcher, name="empty", pairs=0, members=(annotator,))
    response = anna.get(label_url(campaign), headers=headers)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-state="empty"' in html and "The next round is being prepared" in html
    assert f'hx-get="{label_url(campaign)}" hx-trigger="every ' in html
    assert ("<noscript>" in html) is (not headers)  # no-JS pages reload themselves


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_budget_spent_state(anna, annotator, researcher, headers):
    campaign = make_campaign(researcher, name="spent", members=(annotator,), label_cap=0)
    html = anna.get(label_url(campaign), headers=headers).content.decode()
    assert 'data-state="budget"' in html and "The label budget is spent" in html
    assert "hx-trigger" not in html.split('id="workspace"')[1].split(">")[0]


@pytest.mark.django_db
def test_daily_cap_state(anna, annotator, researcher):
    campaign = make_campaign(researcher, name="daily", members=(annotator,), annotator_daily_cap=1)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="k")
    html = anna.get(label_url(campaign)).content.decode()
    assert 'data-state="daily_cap"' in html and "today's limit" in html


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_finished_and_paused_states(anna, annotator, campaign, headers):
    campaign_set_state(campaign=campaign, action="pause")
    html = anna.get(label_url(campaign), headers=headers).content.decode()
    assert 'data-state="paused"' in html and 'hx-trigger="every 30s"' in html
    campaign_set_state(campaign=campaign, action="finish")
    html = anna.get(label_url(campaign), headers=headers).content.decode()
    assert 'data-state="finished"' in html and "This campaign is finished" in html


# --- Access --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_another_campaigns_page_is_not_found(anna, foreign_campaign, headers):
    response = anna.get(label_url(foreign_campaign), headers=headers)
    assert response.status_code == 404
    assert foreign_campaign.name.encode() not in response.content
    assert b"Other team prompt" not in response.content
    assert not Lease.objects.filter(campaign=foreign_campaign).exists()


@pytest.mark.django_db
def test_a_campaign_owner_who_is_not_an_annotator_gets_404(client, researcher, campaign):
    client.force_login(researcher)
    assert client.get(label_url(campaign)).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
@pytest.mark.parametrize("name", ["annotator_ui:submit", "annotator_ui:skip", "annotator_ui:renew"])
def test_another_annotators_lease_is_not_found(
    client, campaign, annotator, other_annotator, name, headers
):
    lease = comparison_next(annotator=other_annotator, campaign_id=campaign.pk).lease
    expires = lease.expires_at
    client.force_login(annotator)
    response = client.post(
        reverse(name, args=[lease.pk]),
        {"choice": "A", "idempotency_key": "ui-x"},
        headers=headers,
    )
    assert response.status_code == 404
    assert lease.comparison.prompt.text.encode() not in response.content
    assert lease.comparison.response_a.text.encode() not in response.content
    lease.refresh_from_db()
    assert lease.state == LeaseState.ACTIVE and lease.expires_at == expires
    assert not Label.objects.exists()


@pytest.mark.django_db
def test_views_refuse_the_wrong_method(anna, annotator, campaign):
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    assert anna.get(submit_url(lease)).status_code == 405
    assert anna.post(label_url(campaign)).status_code == 405


# --- Submitting ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_plain_submit_stores_the_label_and_redirects_to_the_next(anna, annotator, campaign):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    response = anna.post(
        submit_url(lease),
        {"choice": "A", "idempotency_key": form_key(html), "rationale": "clearer"},
    )
    assert response.status_code == 302 and response["Location"] == label_url(campaign)
    label = Label.objects.get()
    # "A" is the response shown first; stored in the comparison's own terms.
    assert label.choice == (Choice.B if lease.swapped else Choice.A)
    assert label.shown_swapped == lease.swapped
    assert label.rationale == "clearer"
    assert label.time_taken_ms is not None and label.time_taken_ms >= 0
    follow = anna.get(response["Location"]).content.decode()
    assert "Saved: A is better." in follow
    assert active_lease(annotator, campaign).pk != lease.pk


@pytest.mark.django_db
def test_htmx_submit_swaps_in_the_next_comparison(anna, annotator, campaign):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    response = anna.post(
        submit_url(lease),
        {"choice": "tie", "idempotency_key": form_key(html), "time_taken_ms": "1234"},
        headers=HX,
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and 'id="workspace"' in body
    assert "Saved: Tie." in body
    nxt = active_lease(annotator, campaign)
    assert nxt.pk != lease.pk and f'data-lease-id="{nxt.pk}"' in body
    assert '<dd data-stat="total">1</dd>' in body
    label = Label.objects.get()
    assert label.choice == Choice.TIE and label.time_taken_ms == 1234


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_a_double_submit_stores_one_label(anna, annotator, campaign, headers):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    data = {"choice": "B", "idempotency_key": form_key(html)}
    anna.post(submit_url(lease), data, headers=headers)
    second = anna.post(submit_url(lease), data, headers=headers)
    assert Label.objects.count() == 1
    if headers:
        assert "Already saved: B is better." in second.content.decode()


@pytest.mark.django_db
def test_a_stale_form_from_another_tab_stores_nothing_more(anna, annotator, campaign):
    first = open_pair(anna, campaign).content.decode()
    second = open_pair(anna, campaign).content.decode()  # same lease, new key
    lease = active_lease(annotator, campaign)
    anna.post(submit_url(lease), {"choice": "A", "idempotency_key": form_key(first)})
    response = anna.post(
        submit_url(lease), {"choice": "B", "idempotency_key": form_key(second)}, headers=HX
    )
    assert response.status_code == 200
    assert "already answered or skipped" in response.content.decode()
    assert Label.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_a_bad_submit_is_400_and_keeps_the_comparison_and_rationale(
    anna, annotator, campaign, headers
):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    response = anna.post(
        submit_url(lease),
        {"choice": "maybe", "idempotency_key": form_key(html), "rationale": "my words"},
        headers=headers,
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "Your answer was not saved" in body and "my words" in body
    assert f'data-lease-id="{lease.pk}"' in body
    assert ("<html" in body) is (not headers)
    assert not Label.objects.exists()


@pytest.mark.django_db
def test_a_too_long_rationale_is_refused(anna, annotator, campaign, settings):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    response = anna.post(
        submit_url(lease),
        {
            "choice": "A",
            "idempotency_key": form_key(html),
            "rationale": "x" * (settings.RATIONALE_MAX_LENGTH + 1),
        },
    )
    assert response.status_code == 400 and not Label.objects.exists()


@pytest.mark.django_db
def test_an_expired_lease_says_so_and_moves_on(anna, annotator, campaign):
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = anna.post(
        submit_url(lease), {"choice": "A", "idempotency_key": form_key(html)}, headers=HX
    )
    assert response.status_code == 200
    assert "expired" in response.content.decode()
    assert not Label.objects.exists()


@pytest.mark.django_db
def test_submitting_the_last_label_of_the_budget_shows_the_finished_state(
    anna, annotator, researcher
):
    campaign = make_campaign(researcher, name="one", members=(annotator,), label_cap=1)
    html = open_pair(anna, campaign).content.decode()
    lease = active_lease(annotator, campaign)
    response = anna.post(
        submit_url(lease), {"choice": "A", "idempotency_key": form_key(html)}, headers=HX
    )
    body = response.content.decode()
    assert "Saved: A is better." in body and 'data-state="budget"' in body


# --- Skip and renew ------------------------------------------------------------------------


@pytest.mark.django_db
def test_plain_skip_redirects_to_the_next(anna, annotator, campaign):
    open_pair(anna, campaign)
    lease = active_lease(annotator, campaign)
    response = anna.post(reverse("annotator_ui:skip", args=[lease.pk]))
    assert response.status_code == 302 and response["Location"] == label_url(campaign)
    lease.refresh_from_db()
    assert lease.state == LeaseState.SKIPPED
    assert "Skipped." in open_pair(anna, campaign).content.decode()


@pytest.mark.django_db
def test_htmx_skip_swaps_in_the_next(anna, annotator, campaign):
    open_pair(anna, campaign)
    lease = active_lease(annotator, campaign)
    response = anna.post(reverse("annotator_ui:skip", args=[lease.pk]), headers=HX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and "Skipped." in body
    assert active_lease(annotator, campaign).pk != lease.pk
    assert not Label.objects.exists()


@pytest.mark.django_db
def test_plain_renew_extends_the_lease_and_returns(anna, annotator, campaign):
    open_pair(anna, campaign)
    lease = active_lease(annotator, campaign)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + dt.timedelta(seconds=20))
    response = anna.post(reverse("annotator_ui:renew", args=[lease.pk]))
    assert response.status_code == 302 and response["Location"] == label_url(campaign)
    lease.refresh_from_db()
    assert lease.expires_at > timezone.now() + dt.timedelta(seconds=200)


@pytest.mark.django_db
def test_htmx_renew_returns_the_new_timer(anna, annotator, campaign):
    open_pair(anna, campaign)
    lease = active_lease(annotator, campaign)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + dt.timedelta(seconds=20))
    response = anna.post(reverse("annotator_ui:renew", args=[lease.pk]), headers=HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div class="lease-timer"')
    seconds = int(re.search(r'data-seconds-left="(\d+)"', body).group(1))
    assert seconds > 200


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_renewing_an_expired_lease_says_it_ran_out(anna, annotator, campaign, headers):
    open_pair(anna, campaign)
    lease = active_lease(annotator, campaign)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = anna.post(reverse("annotator_ui:renew", args=[lease.pk]), headers=headers)
    if headers:
        assert response.status_code == 409
        assert "ran out" in response.content.decode()
    else:
        assert response.status_code == 302
        assert "expired" in anna.get(response["Location"]).content.decode()


# --- CSRF and headers ----------------------------------------------------------------------


@pytest.mark.django_db
def test_posts_need_the_csrf_token(annotator, campaign):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    html = client.get(label_url(campaign)).content.decode()  # the "next pair" button
    assert client.post(next_url(campaign)).status_code == 403
    assert not Lease.objects.exists()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    client.post(next_url(campaign), {"csrfmiddlewaretoken": token})
    html = client.get(label_url(campaign)).content.decode()
    lease = active_lease(annotator, campaign)
    data = {"choice": "A", "idempotency_key": form_key(html)}
    for name in ("annotator_ui:submit", "annotator_ui:skip", "annotator_ui:renew"):
        assert client.post(reverse(name, args=[lease.pk]), data).status_code == 403
        assert client.post(reverse(name, args=[lease.pk]), data, headers=HX).status_code == 403
    assert not Label.objects.exists()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    response = client.post(submit_url(lease), {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and Label.objects.count() == 1
    # htmx sends the token as a header (hx-headers on <body>).
    html = client.get(label_url(campaign)).content.decode()
    header_token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    nxt = active_lease(annotator, campaign)
    response = client.post(
        submit_url(nxt),
        {"choice": "B", "idempotency_key": form_key(html)},
        headers={**HX, "X-CSRFToken": header_token},
    )
    assert response.status_code == 200 and Label.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_pages_send_security_headers(anna, campaign, headers):
    for url in ("/", label_url(campaign), reverse("login")):
        response = anna.get(url, headers=headers)
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"
    response = anna.get(label_url(campaign), headers=headers)
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]
    assert "HX-Request" in response["Vary"]


@pytest.mark.django_db
def test_the_middleware_covers_error_pages_but_not_the_admin(client, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "annotator_ui.security.SecurityHeadersMiddleware"]
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "Content-Security-Policy" not in client.get("/admin/login/")


@pytest.mark.django_db
def test_pages_have_no_inline_script_or_style(anna, campaign):
    for url in ("/", label_url(campaign), reverse("login")):
        html = anna.get(url).content.decode()
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag
        assert "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html)
        assert "https://" not in html and "http://" not in html  # no CDN


@pytest.mark.django_db
def test_static_files_are_vendored():
    from django.contrib.staticfiles import finders

    for path in ("annotator_ui/vendor/htmx.min.js", "annotator_ui/app.js", "annotator_ui/app.css"):
        assert finders.find(path), path


# --- Query counts --------------------------------------------------------------------------


@pytest.mark.django_db
def test_label_page_query_count_is_bounded(
    anna, annotator, researcher, django_assert_max_num_queries
):
    small = make_campaign(researcher, name="small", pairs=2, members=(annotator,))
    big = make_campaign(researcher, name="big", pairs=60, members=(annotator,), label_cap=500)
    for i in range(5):
        Round.objects.create(campaign=big, index=i, state=RoundState.DONE)
    for campaign in (small, big):
        with django_assert_max_num_queries(17):  # the "next pair" button
            anna.get(label_url(campaign))
        with django_assert_max_num_queries(24):  # leasing a new comparison
            anna.post(next_url(campaign), headers=HX)
        with django_assert_max_num_queries(17):  # the same lease again
            anna.get(label_url(campaign))
        with django_assert_max_num_queries(17):
            anna.get(label_url(campaign), headers=HX)


# --- Leasing is a POST ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_the_page_leases_nothing_and_offers_the_next_pair(anna, annotator, campaign, headers):
    for _ in range(3):  # a visit, a reload, a poll
        response = anna.get(label_url(campaign), headers=headers)
        html = response.content.decode()
        assert response.status_code == 200
        assert 'data-state="ready"' in html
        assert (
            f'action="{next_url(campaign)}"' in html and f'hx-post="{next_url(campaign)}"' in html
        )
        assert 'id="next-button"' in html and 'aria-keyshortcuts="n"' in html
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_polling_the_empty_state_leases_nothing_when_pairs_arrive(anna, annotator, researcher):
    campaign = make_campaign(researcher, name="later", pairs=0, members=(annotator,))
    assert 'data-state="empty"' in anna.get(label_url(campaign), headers=HX).content.decode()
    comparisons_import_pairs(
        campaign=campaign, pairs=[{"prompt": "p", "response_a": "a", "response_b": "b"}]
    )
    html = anna.get(label_url(campaign), headers=HX).content.decode()
    assert 'data-state="ready"' in html  # the poll shows the button, and leases nothing
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_plain_next_pair_leases_and_redirects_to_the_page(anna, annotator, campaign):
    response = anna.post(next_url(campaign))
    assert response.status_code == 302 and response["Location"] == label_url(campaign)
    lease = active_lease(annotator, campaign)
    html = anna.get(label_url(campaign)).content.decode()
    assert f'data-lease-id="{lease.pk}"' in html
    # Pressing it again (a second tab) keeps the same lease.
    anna.post(next_url(campaign))
    assert Lease.objects.filter(annotator=annotator).count() == 1


@pytest.mark.django_db
def test_htmx_next_pair_swaps_in_the_leased_comparison(anna, annotator, campaign):
    response = anna.post(next_url(campaign), headers=HX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    lease = active_lease(annotator, campaign)
    assert f'data-lease-id="{lease.pk}"' in body and 'data-state="labeling"' in body


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HX], ids=["plain", "htmx"])
def test_next_pair_on_an_empty_campaign_says_nothing_is_queued(
    anna, annotator, researcher, headers
):
    campaign = make_campaign(researcher, name="none", pairs=0, members=(annotator,))
    response = anna.post(next_url(campaign), headers=headers, follow=not headers)
    assert 'data-state="empty"' in response.content.decode()
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_next_pair_needs_a_post_and_membership(anna, foreign_campaign):
    assert anna.get(next_url(foreign_campaign)).status_code == 405
    assert anna.post(next_url(foreign_campaign)).status_code == 404
    assert anna.post(next_url(foreign_campaign), headers=HX).status_code == 404
    assert not Lease.objects.exists()
