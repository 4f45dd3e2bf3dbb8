"""The raters pages: what they show, the exclude button, escaping, and gold pairs that look
like any other pair on the annotator's page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from rlhf_platform.labeling.models import Label, Lease
from rlhf_platform.raters.models import GoldPair, RaterExclusion
from rlhf_platform.raters.services import raters_refit
from tests.conftest import make_campaign
from tests.rlhf_platform.raters.crowd import crowd_campaign

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_each_rater_with_flags_and_excludes(researcher):
    campaign, users = crowd_campaign(researcher)
    client = _client(researcher)
    html = client.get(f"/research/campaigns/{campaign.pk}/raters/").content.decode()
    for name in ("carla", "rudi", "fiona"):
        assert name in html
    fiona = re.search(rf'data-rater="user:{users["fiona"].pk}".*?</tr>', html, re.S).group(0)
    assert "position" in fiona and "picks the first shown" in fiona
    rudi = re.search(rf'data-rater="user:{users["rudi"].pk}".*?</tr>', html, re.S).group(0)
    assert "too_fast" in rudi and "median 0.9 s" in rudi
    carla = re.search(rf'data-rater="user:{users["carla"].pk}".*?</tr>', html, re.S).group(0)
    assert '<span class="muted">none</span>' in carla and "<svg" in carla
    response = client.post(
        f"/research/campaigns/{campaign.pk}/raters/exclusion/",
        {"rater": f"user:{users['rudi'].pk}", "excluded": "1", "reason": "spam"},
    )
    assert response.status_code == 302
    assert RaterExclusion.objects.filter(campaign=campaign, annotator=users["rudi"]).exists()
    html = client.get(f"/research/campaigns/{campaign.pk}/raters/").content.decode()
    assert "Include" in html
    admin_html = client.get("/research/raters/").content.decode()
    assert "Crowd" in admin_html and "fiona" in admin_html


def test_the_page_escapes_what_it_shows(researcher, annotator):
    campaign = make_campaign(researcher, members=(annotator,), pairs=1)
    comp = campaign.comparisons.first()
    Label.objects.create(
        comparison=comp,
        campaign=campaign,
        source="judge",
        judge_name='<script>alert("x")</script>',
        choice="A",
        idempotency_key="j",
    )
    raters_refit(campaign_id=campaign.pk)
    html = _client(researcher).get(f"/research/campaigns/{campaign.pk}/raters/").content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html


def test_gold_answers_never_leak_to_the_annotators_page(annotator, gold_campaign):
    campaign, gold_ids = gold_campaign.campaign, gold_campaign.gold_ids
    client = _client(annotator)
    pages = {True: [], False: []}
    # The page leases on POST ("next pair"); each answer leases the next before rendering.
    html = client.post(f"/campaigns/{campaign.pk}/label/next/", follow=True).content.decode()
    for _ in range(6):
        match = re.search(r"/leases/(\d+)/label/", html)
        if match is None:
            break
        lease_id = int(match.group(1))
        lease = Lease.objects.get(pk=lease_id)
        pages[lease.comparison_id in gold_ids].append((len(pages[True]) + len(pages[False]), html))
        html = client.post(
            f"/leases/{lease_id}/label/",
            {"choice": "A", "idempotency_key": f"p{lease_id}", "time_taken_ms": "3000"},
            follow=True,
        ).content.decode()
    assert pages[True] and pages[False]
    for _, html in pages[True] + pages[False]:
        assert "gold" not in html.lower()

    def skeleton(html: str) -> str:
        html = re.sub(r">[^<]*<", "><", html)  # texts
        return re.sub(r"=(\"[^\"]*\"|'[^']*')", "=", html)  # attribute values

    # Past the first page (which has no "undo" yet), a gold page and another have the same
    # markup: only texts and attribute values differ.
    gold_page = next(h for i, h in pages[True] if i > 0)
    other_page = next(h for i, h in pages[False] if i > 0)
    assert skeleton(gold_page) == skeleton(other_page)


def test_the_label_browser_marks_a_pair_as_gold(researcher, annotator):
    campaign = make_campaign(researcher, members=(annotator,), pairs=2)
    from rlhf_platform.labeling.services import comparison_next, label_submit

    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label_submit(annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="m")
    client = _client(researcher)
    labels_url = f"/research/campaigns/{campaign.pk}/labels/"
    html = client.get(labels_url).content.decode()
    assert "Mark this pair as gold" in html
    response = client.post(
        f"/research/campaigns/{campaign.pk}/raters/gold/",
        {"comparison_id": str(lease.comparison_id), "answer": "B", "next": labels_url},
    )
    assert response.status_code == 302 and response["Location"] == labels_url
    assert GoldPair.objects.get(source_id=lease.comparison_id).answer == "B"
    # An outside address is never a redirect target.
    response = client.post(
        f"/research/campaigns/{campaign.pk}/raters/gold/",
        {"rate": "0.1", "next": "https://evil.example/"},
    )
    assert response["Location"] == f"/research/campaigns/{campaign.pk}/raters/"


def test_the_page_costs_the_same_queries_whatever_the_number_of_raters(
    researcher, django_assert_max_num_queries
):
    campaign, _ = crowd_campaign(researcher, pairs=20, gold=2)
    client = _client(researcher)
    # session, user, campaign; the rater settings, labels, gold answers, exclusions, names and
    # gold count of raters_overview; the messages; savepoints.
    with django_assert_max_num_queries(14) as few:
        client.get(f"/research/campaigns/{campaign.pk}/raters/")
    bigger, _ = crowd_campaign(researcher, pairs=60, gold=8, seed=1, prefix="b")
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(f"/research/campaigns/{bigger.pk}/raters/")
