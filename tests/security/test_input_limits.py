"""Hostile and oversized input (issue 18): every size limit answers 413 with a code and a
message that names it, every text is stored exactly or refused with a 400 and a code, and
nothing is half-written. Each test here answered a 500, or lost data, before the fix.

The requests go through Django's test client with the body as bytes and a token, as a
client would send them (``Content-Length`` included), so the body-size middleware runs.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from rlhf_platform import limits
from rlhf_platform.accounts.models import Role
from rlhf_platform.campaigns.models import Campaign, Prompt
from rlhf_platform.datafiles import exports
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.labeling.services import comparison_next, label_submit
from rlhf_platform.rounds.models import Response
from tests.conftest import make_campaign, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    owner = make_user("rita", Role.RESEARCHER)
    annotator = make_user("anna")
    campaign = make_campaign(owner, pairs=0, members=(annotator,))
    return {
        "owner": owner,
        "annotator": annotator,
        "campaign": campaign,
        "client": Client(raise_request_exception=False),
        "token": Token.objects.create(user=owner).key,
    }


def _post_json(world, path: str, body: object, *, token: str | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return world["client"].post(
        path,
        raw,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token or world['token']}",
    )


def _post_file(world, path: str, name: str, data: bytes):
    return world["client"].post(
        path,
        {"file": SimpleUploadedFile(name, data)},
        HTTP_AUTHORIZATION=f"Token {world['token']}",
    )


def _prompts_url(world) -> str:
    return f"/api/v1/campaigns/{world['campaign'].pk}/prompts/import/"


def _pairs_url(world) -> str:
    return f"/api/v1/campaigns/{world['campaign'].pk}/imports/pairs/"


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- Sizes ----------------------------------------------------------------------------------


def test_a_3mb_json_import_of_11000_prompts_is_accepted(world):
    """It was a 500 (RequestDataTooBig): Django's 2.5 MB default applied to imports too."""
    content = "\n".join(
        json.dumps({"prompt": f"prompt {i}: " + "words " * 45}) for i in range(11_000)
    )
    body = json.dumps({"format": "jsonl", "content": content}).encode()
    assert len(body) > 3_000_000
    response = _post_json(world, _prompts_url(world), body)
    assert response.status_code == 201, response.content[:500]
    assert response.json() == {"count": 11_000}
    assert Prompt.objects.filter(campaign=world["campaign"]).count() == 11_000


def test_a_body_over_the_request_limit_answers_413_naming_the_limit(world, settings):
    """A 3 MB description in a campaign creation: refused unread, nothing created."""
    body = {"name": "Big", "description": "x" * 3_000_000}
    response = _post_json(world, "/api/v1/campaigns/", body)
    error = _error(response, 413, "request_too_large")
    assert str(settings.REQUEST_MAX_BYTES) in error["message"]
    assert not Campaign.objects.filter(name="Big").exists()


def test_a_10mb_prompt_in_a_json_import_is_a_listed_bad_row(world):
    """The body fits the import limits; the row is over PROMPT_MAX_CHARS and is named."""
    content = json.dumps({"prompt": "y" * 10_000_000}) + "\n" + json.dumps({"prompt": "ok"})
    response = _post_json(world, _prompts_url(world), {"format": "jsonl", "content": content})
    error = _error(response, 400, "import_invalid")
    assert error["details"][0]["line"] == 1
    assert "PROMPT_MAX_CHARS" in error["details"][0]["error"]
    assert not Prompt.objects.filter(campaign=world["campaign"]).exists()


def test_an_import_body_over_its_limit_answers_413(world, settings):
    settings.IMPORT_REQUEST_MAX_BYTES = 200_000
    content = json.dumps({"prompt": "z" * 300_000})
    response = _post_json(world, _prompts_url(world), {"format": "jsonl", "content": content})
    error = _error(response, 413, "request_too_large")
    assert "200000" in error["message"]


@pytest.mark.parametrize("path", ["json", "multipart"])
def test_the_json_and_file_paths_share_the_import_limit(world, settings, path):
    settings.IMPORT_MAX_BYTES = 100_000
    content = "\n".join(json.dumps({"prompt": f"p{i} " + "w" * 100}) for i in range(1_000))
    if path == "json":
        response = _post_json(world, _prompts_url(world), {"format": "jsonl", "content": content})
    else:
        response = _post_file(world, _prompts_url(world), "p.jsonl", content.encode())
    error = _error(response, 413, "file_too_large")
    assert "100000" in error["message"] and "IMPORT_MAX_BYTES" in error["message"]
    assert not Prompt.objects.filter(campaign=world["campaign"]).exists()


def test_a_response_over_the_limit_is_a_bad_row_of_a_pair_import(world, settings):
    settings.RESPONSE_MAX_CHARS = 1_000
    rows = [
        {"prompt": "p", "response_a": "a" * 1_001, "response_b": "b"},
        {"prompt": "q", "response_a": "a", "response_b": "b"},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    error = _error(_post_file(world, _pairs_url(world), "x.jsonl", data), 400, "import_invalid")
    assert [d["line"] for d in error["details"]] == [1]
    assert "RESPONSE_MAX_CHARS" in error["details"][0]["error"]
    assert not Response.objects.exists()


def test_model_output_is_made_storable_and_cut_to_the_limit(settings):
    settings.RESPONSE_MAX_CHARS = 100
    assert limits.model_text("ok\x00 \ud800 end") == "ok\ufffd \ufffd end"
    assert len(limits.model_text("x" * 10_000_000)) == 100


# --- Encoding -------------------------------------------------------------------------------

BAD_TEXTS = ["lone \ud800 surrogate", "low \udfff alone", "nul \x00 inside"]


@pytest.mark.parametrize("bad", BAD_TEXTS)
@pytest.mark.parametrize("where", ["prompt", "messages", "metadata", "reference"])
def test_bad_text_in_an_imported_prompt_is_a_listed_bad_row(world, bad, where):
    record = {
        "prompt": {"prompt": bad},
        "messages": {"messages": [{"role": "user", "content": bad}]},
        "metadata": {"prompt": "p", "metadata": {"k": bad}},
        "reference": {"prompt": "p", "reference": bad},
    }[where]
    content = json.dumps({"prompt": "fine"}) + "\n" + json.dumps(record)
    response = _post_json(world, _prompts_url(world), {"format": "jsonl", "content": content})
    error = _error(response, 400, "import_invalid")
    assert error["details"][0]["line"] == 2
    assert not Prompt.objects.filter(campaign=world["campaign"]).exists()


@pytest.mark.parametrize("bad", BAD_TEXTS)
@pytest.mark.parametrize("field", ["prompt", "response_a", "response_b"])
def test_bad_text_in_an_imported_pair_is_a_listed_bad_row(world, bad, field):
    record = {"prompt": "p", "response_a": "a", "response_b": "b", field: bad}
    data = (json.dumps(record) + "\n").encode()
    error = _error(_post_file(world, _pairs_url(world), "x.jsonl", data), 400, "import_invalid")
    assert error["details"][0]["line"] == 1
    assert not Comparison.objects.exists()


@pytest.mark.parametrize("bad", BAD_TEXTS)
@pytest.mark.parametrize("field", ["policy_config", "judge_config", "reward_config"])
def test_bad_text_in_a_config_is_a_validation_error(world, bad, field):
    response = _post_json(world, "/api/v1/campaigns/", {"name": "N", field: {"k": [bad]}})
    error = _error(response, 400, "validation_error")
    assert field in error["details"]
    assert not Campaign.objects.filter(name="N").exists()


@pytest.mark.parametrize("value", [False, "0.5"])
def test_a_campaign_number_of_the_wrong_json_type_is_refused(world, value):
    """The schema says ``mixed_fraction`` is a number; DRF read ``false`` as 0.0 (schemathesis's
    negative-data check found it)."""
    response = _post_json(world, "/api/v1/campaigns/", {"name": "N", "mixed_fraction": value})
    assert _error(response, 400, "validation_error")["details"]["mixed_fraction"]
    assert not Campaign.objects.filter(name="N").exists()


# --- Pair import ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_pair_import_lists_every_bad_row(world, fmt):
    rows = [
        {"prompt": "p1", "response_a": "a", "response_b": "b", "priority": "1.5"},
        {"prompt": "p2", "response_a": "a", "response_b": "b", "priority": "high"},
        {"prompt": "p3", "response_a": "same", "response_b": "same"},
        {"prompt": "p4", "response_a": "a", "response_b": "b", "priority": "nan"},
        {"prompt": "", "response_a": "a", "response_b": "b"},
    ]
    if fmt == "jsonl":
        data = "\n".join(json.dumps(r) for r in rows).encode()
        lines = [2, 3, 4, 5]
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, ["prompt", "response_a", "response_b", "priority"])
        writer.writeheader()
        writer.writerows(rows)
        data = out.getvalue().encode()
        lines = [3, 4, 5, 6]  # the header is line 1
    response = _post_file(world, _pairs_url(world), f"pairs.{fmt}", data)
    error = _error(response, 400, "import_invalid")
    assert [d["line"] for d in error["details"]] == lines
    assert "priority" in error["details"][0]["error"]
    assert not Comparison.objects.exists() and not Prompt.objects.exists()


def test_a_non_numeric_priority_in_the_service_is_an_import_error(world):
    """It was a 500 (float('high'))."""
    from rlhf_platform.campaigns.services import comparisons_import_pairs
    from rlhf_platform.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        comparisons_import_pairs(
            campaign=world["campaign"],
            pairs=[{"prompt": "p", "response_a": "a", "response_b": "b", "priority": [1]}],
        )
    assert caught.value.code == "import_invalid" and caught.value.details[0]["line"] == 1


def test_a_pair_with_messages_keeps_its_chat_history_to_the_export(world):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times 3?"},
    ]
    record = {"messages": history, "response_a": "12.", "response_b": "7."}
    data = (json.dumps(record) + "\n").encode()
    assert _post_file(world, _pairs_url(world), "x.jsonl", data).status_code == 201
    prompt = Prompt.objects.get(campaign=world["campaign"])
    assert prompt.messages == history and prompt.text == "And times 3?"

    lease = comparison_next(annotator=world["annotator"], campaign_id=world["campaign"].pk).lease
    choice = "B" if lease.swapped else "A"  # the comparison's A ("12.") as shown
    label_submit(
        annotator=world["annotator"], lease_id=lease.pk, choice=choice, idempotency_key="k"
    )
    (row,) = exports.preference_records(campaign=world["campaign"], form="conversational")
    assert row["prompt"] == history
    assert row["chosen"] == [{"role": "assistant", "content": "12."}]


# --- Rationale on the labeling page ---------------------------------------------------------


def test_an_overlong_rationale_is_not_echoed_back(world, settings):
    annotator, campaign = world["annotator"], world["campaign"]
    from rlhf_platform.campaigns.services import comparisons_import_pairs

    comparisons_import_pairs(
        campaign=campaign, pairs=[{"prompt": "p", "response_a": "a", "response_b": "b"}]
    )
    client = Client()
    client.force_login(annotator)
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    rationale = "r" * 1_000_000
    response = client.post(
        reverse("annotator_ui:submit", args=[lease.pk]),
        {"choice": "A", "idempotency_key": "k-1", "rationale": rationale},
    )
    assert response.status_code == 400
    assert len(response.content) < 100_000, len(response.content)
    assert not Label.objects.exists()


def test_a_3mb_rationale_answers_413_not_500(world, settings):
    annotator, campaign = world["annotator"], world["campaign"]
    from rlhf_platform.campaigns.services import comparisons_import_pairs

    comparisons_import_pairs(
        campaign=campaign, pairs=[{"prompt": "p", "response_a": "a", "response_b": "b"}]
    )
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    token = Token.objects.create(user=annotator).key
    body = {"choice": "A", "idempotency_key": "k", "rationale": "r" * 3_000_000}
    response = _post_json(world, f"/api/v1/leases/{lease.pk}/label/", body, token=token)
    error = _error(response, 413, "request_too_large")
    assert str(settings.REQUEST_MAX_BYTES) in error["message"]
    client = Client(raise_request_exception=False)
    client.force_login(annotator)
    page = client.post(reverse("annotator_ui:submit", args=[lease.pk]), body)
    assert page.status_code == 413 and len(page.content) < 1_000
    assert not Label.objects.exists()


def test_a_rationale_with_a_lone_surrogate_is_refused_by_the_service(world):
    from rlhf_platform.campaigns.services import comparisons_import_pairs
    from rlhf_platform.errors import InvalidInput

    comparisons_import_pairs(
        campaign=world["campaign"], pairs=[{"prompt": "p", "response_a": "a", "response_b": "b"}]
    )
    lease = comparison_next(annotator=world["annotator"], campaign_id=world["campaign"].pk).lease
    with pytest.raises(InvalidInput) as caught:
        label_submit(
            annotator=world["annotator"],
            lease_id=lease.pk,
            choice="A",
            idempotency_key="k",
            rationale="bad \ud800",
        )
    assert caught.value.code == "invalid_text"
    assert not Label.objects.exists()


def test_the_service_refuses_bad_text_from_a_spec_file_too(world):
    """Spec files (``manage.py campaign_create``) reach the service without a serializer."""
    from rlhf_platform.campaigns.services import campaign_create
    from rlhf_platform.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        campaign_create(owner=world["owner"], name="S", policy_config={"k": "\udc00"})
    assert caught.value.code == "invalid_text"
    assert not Campaign.objects.filter(name="S").exists()


@pytest.mark.parametrize("kind", ["prompts", "pairs"])
def test_a_csv_with_a_bare_carriage_return_is_an_import_error(world, kind):
    """Found by the fuzzer: csv.Error ("new-line character seen in unquoted field") was a 500."""
    if kind == "prompts":
        body = {"format": "csv", "content": "prompt\na\rb\n"}
        response = _post_json(world, _prompts_url(world), body)
    else:
        data = b"prompt,response_a,response_b\np\r,a,b\n"
        response = _post_file(world, _pairs_url(world), "x.csv", data)
    assert response.status_code in (201, 400), response.content[:300]
    if response.status_code == 400:
        assert response.json()["code"] == "import_invalid"
