"""GET /campaigns/<id>/raters/, POST .../raters/exclusion/ and .../raters/gold/: who may call
them, their 4xx errors (code and message, nothing written), and no gold answer in any
response."""

from __future__ import annotations

import json

import pytest

from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.raters.models import GoldPair, RaterExclusion, RaterSettings
from rlhf_platform.raters.services import raters_refit
from tests.rlhf_platform.api.helpers import V1, assert_error
from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = pytest.mark.django_db


def url(campaign, tail: str = "") -> str:
    return f"{V1}/campaigns/{campaign.pk}/raters/{tail}"


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    campaign = seed_campaign(researcher, [annotator, other_annotator])
    raters_refit(campaign_id=campaign.pk)
    return campaign


def test_the_owner_gets_every_rater_with_estimates(client_for, researcher, annotator, seeded):
    body = client_for(researcher).get(url(seeded)).json()
    keys = {r["rater"] for r in body["raters"]}
    assert f"user:{annotator.pk}" in keys and any(k.startswith("judge:") for k in keys)
    anna = next(r for r in body["raters"] if r["rater"] == f"user:{annotator.pk}")
    assert anna["name"] == "anna" and anna["labels"] == 6
    assert 0 <= anna["reliability"] <= 1 and len(anna["reliability_interval"]) == 2
    assert anna["judge_agreement"]["n"] == 6
    assert sum(anna["labels_over_time"]) == 6 and len(anna["labels_over_time"]) == 12
    assert body["timeline"]["buckets"] == 12 and body["timeline"]["start"]


def test_annotators_and_outsiders_are_refused(client_for, annotator, outsider, seeded):
    assert_error(client_for(annotator).get(url(seeded)), 403, "permission_denied")
    assert_error(client_for(outsider).get(url(seeded)), 404, "not_found")
    assert_error(client_for(None).get(url(seeded)), 401, "not_authenticated")
    body = {"rater": f"user:{annotator.pk}", "excluded": True}
    assert_error(
        client_for(annotator).post(url(seeded, "exclusion/"), body, format="json"),
        403,
        "permission_denied",
    )
    assert not RaterExclusion.objects.exists()


def test_exclusion_round_trip_and_errors(client_for, researcher, annotator, outsider, seeded):
    client = client_for(researcher)
    body = {"rater": f"user:{annotator.pk}", "excluded": True, "reason": "spam"}
    got = client.post(url(seeded, "exclusion/"), body, format="json")
    assert got.status_code == 200 and got.json() == {
        "rater": f"user:{annotator.pk}",
        "excluded": True,
        "changed": True,
    }
    listed = client.get(url(seeded)).json()["raters"]
    assert next(r for r in listed if r["rater"] == body["rater"])["excluded"] is True
    entries = AuditEntry.objects.count()
    assert_error(
        client.post(
            url(seeded, "exclusion/"), {"rater": "nobody", "excluded": True}, format="json"
        ),
        400,
        "invalid_rater",
    )
    assert_error(
        client.post(
            url(seeded, "exclusion/"),
            {"rater": f"user:{outsider.pk}", "excluded": True},
            format="json",
        ),
        404,
        "rater_not_found",
    )
    assert_error(
        client.post(
            url(seeded, "exclusion/"), {"rater": "judge:x", "excluded": "yes"}, format="json"
        ),
        400,
        "validation_error",
    )
    assert AuditEntry.objects.count() == entries


def test_gold_rate_and_marking_with_errors(client_for, researcher, seeded):
    client = client_for(researcher)
    comp = Comparison.objects.filter(campaign=seeded).first()
    got = client.post(
        url(seeded, "gold/"), {"rate": 0.2, "comparison_id": comp.pk, "answer": "B"}, format="json"
    )
    assert got.status_code == 200, got.content
    assert got.json() == {"gold_rate": 0.2, "gold_pairs": 1, "marked": comp.pk}
    assert GoldPair.objects.get(source=comp).answer == "B"
    for body, status, code in [
        ({"rate": 0.9}, 400, "invalid_gold_rate"),
        ({}, 400, "nothing_to_do"),
        ({"comparison_id": comp.pk, "answer": "left"}, 400, "invalid_gold_answer"),
        ({"comparison_id": 10**9, "answer": "A"}, 404, "comparison_not_found"),
        ({"rate": "high"}, 400, "validation_error"),
    ]:
        assert_error(client.post(url(seeded, "gold/"), body, format="json"), status, code)
    # Both or neither: a bad rate leaves the comparison unmarked.
    other = Comparison.objects.filter(campaign=seeded, gold__isnull=True, gold_copy__isnull=True)
    other = other.exclude(pk=comp.pk).first()
    assert_error(
        client.post(
            url(seeded, "gold/"),
            {"rate": 2, "comparison_id": other.pk, "answer": "A"},
            format="json",
        ),
        400,
        "invalid_gold_rate",
    )
    assert not GoldPair.objects.filter(source=other).exists()
    assert RaterSettings.objects.get(campaign=seeded).gold_rate == 0.2


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + "/" + k, k, v
            yield from _walk(v, path + "/" + k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}/{i}")


def test_gold_answers_never_leak_to_the_api(client_for, researcher, annotator, gold_campaign):
    campaign, gold_ids = gold_campaign.campaign, gold_campaign.gold_ids
    client = client_for(annotator)
    shapes = {}
    bodies = []
    while True:
        got = client.post(f"{V1}/campaigns/{campaign.pk}/next/")
        body = got.json()
        if body.get("status") != "leased":
            break
        bodies.append(got.content.decode())
        is_gold = Comparison.objects.get(leases__pk=body["lease_id"]).pk in gold_ids
        shapes.setdefault(is_gold, set()).add(
            tuple(sorted(p for p, *_ in _walk(body) if not p.split("/")[-1].isdigit()))
        )
        submitted = client.post(
            f"{V1}/leases/{body['lease_id']}/label/",
            {"choice": "B", "idempotency_key": f"k{body['lease_id']}"},
            format="json",
        )
        assert submitted.status_code == 201
        bodies.append(submitted.content.decode())
    assert True in shapes and False in shapes, "no gold pair was served"
    assert shapes[True] == shapes[False]  # a gold pair looks like any other
    for text in bodies:
        assert "gold" not in text.lower()
        keys = {k.lower() for _, k, _ in _walk(json.loads(text))}
        assert not {k for k in keys if "answer" in k or "truth" in k or "known" in k}
    # The researcher's view has accuracies on gold, never the answers.
    listing = client_for(researcher).get(url(campaign)).json()
    assert not [k for _, k, _ in _walk(listing) if k in ("answer", "answers", "truth")]
    assert Label.objects.filter(comparison_id__in=gold_ids).count() >= 1
    assert json.dumps(listing)  # serializable
