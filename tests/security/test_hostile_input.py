"""Input PostgreSQL cannot store is refused with a 400, never a server error.

Found by the OpenAPI fuzzing (test_api_fuzz.py): a NUL character (U+0000) inside a JSON
object or a JSONL import reached the database, which refuses it in text and jsonb.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from rlhf_platform.accounts.models import Role
from rlhf_platform.campaigns.models import Campaign, Prompt
from tests.conftest import make_campaign, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(db):
    owner = make_user("rita", Role.RESEARCHER)
    client = APIClient()
    client.force_authenticate(owner)
    return client, make_campaign(owner, pairs=0)


@pytest.mark.parametrize("field", ["judge_config", "policy_config", "reward_config"])
@pytest.mark.parametrize("bad", [{"a\x00": 1}, {"a": "b\x00"}, {"a": [{"b": "\x00"}]}])
def test_a_nul_in_a_config_object_is_a_validation_error(owner_client, field, bad):
    client, _ = owner_client
    response = client.post("/api/v1/campaigns/", {"name": "N", field: bad}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["details"]
    assert not Campaign.objects.filter(name="N").exists()


def test_a_nul_in_an_imported_prompt_is_an_import_error(owner_client):
    client, campaign = owner_client
    content = '{"prompt": "fine"}\n{"prompt": "bad \\u0000 here"}\n'
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/prompts/import/",
        {"format": "jsonl", "content": content},
        format="json",
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "import_invalid" and body["details"][0]["line"] == 2
    assert not Prompt.objects.filter(campaign=campaign).exists()


def test_a_nul_in_an_imported_pair_is_an_import_error(owner_client):
    client, campaign = owner_client
    data = b'{"prompt": "p", "response_a": "a\\u0000", "response_b": "b"}\n'
    upload = SimpleUploadedFile("pairs.jsonl", data, content_type="application/x-ndjson")
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/imports/pairs/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "import_invalid"
