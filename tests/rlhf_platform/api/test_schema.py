from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

V1_OPERATIONS = {
    ("/api/v1/auth/token/", "post"),
    ("/api/v1/campaigns/", "get"),
    ("/api/v1/campaigns/", "post"),
    ("/api/v1/campaigns/{campaign_id}/", "get"),
    ("/api/v1/campaigns/{campaign_id}/state/", "post"),
    ("/api/v1/campaigns/{campaign_id}/members/", "post"),
    ("/api/v1/campaigns/{campaign_id}/prompts/import/", "post"),
    ("/api/v1/campaigns/{campaign_id}/progress/", "get"),
    ("/api/v1/campaigns/{campaign_id}/next/", "post"),
    ("/api/v1/leases/{lease_id}/label/", "post"),
    ("/api/v1/labels/{label_id}/undo/", "post"),
    ("/api/v1/leases/{lease_id}/skip/", "post"),
    ("/api/v1/leases/{lease_id}/renew/", "post"),
    ("/api/v1/campaigns/{campaign_id}/rounds/", "get"),
    ("/api/v1/rounds/{round_id}/retry/", "post"),
    ("/api/v1/campaigns/{campaign_id}/exports/labels/", "get"),
    ("/api/v1/campaigns/{campaign_id}/exports/preferences/", "get"),
    ("/api/v1/campaigns/{campaign_id}/imports/pairs/", "post"),
    ("/api/v1/campaigns/{campaign_id}/raters/", "get"),
    ("/api/v1/campaigns/{campaign_id}/raters/exclusion/", "post"),
    ("/api/v1/campaigns/{campaign_id}/raters/gold/", "post"),
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns any generator warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert yaml.safe_load(out.read_text())["openapi"].startswith("3.")


def test_every_endpoint_is_documented(schema):
    operations = {
        (path, method)
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
    }
    assert operations == V1_OPERATIONS


def test_every_endpoint_documents_its_errors_with_the_error_schema(schema):
    for path, method in V1_OPERATIONS:
        responses = schema["paths"][path][method]["responses"]
        errors = {code: r for code, r in responses.items() if int(code) >= 400}
        assert errors, (path, method)
        if path != "/api/v1/auth/token/":
            assert "401" in errors, (path, method)
        for response in errors.values():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error"
            assert "`" in response["description"]  # names its error codes


def test_next_documents_both_outcomes(schema):
    body = schema["components"]["schemas"]["NextComparison"]
    assert body["discriminator"]["propertyName"] == "status"
    assert set(body["discriminator"]["mapping"]) == {"leased", "nothing_queued"}


def test_the_lease_shown_to_an_annotator_has_no_mapping(schema):
    fields = set(schema["components"]["schemas"]["LeasedComparison"]["properties"])
    assert not fields & {"swapped", "comparison_id", "shown_swapped"}


def test_the_schema_is_served(db):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v1/campaigns/{campaign_id}/next/" in response.json()["paths"]


def test_the_docs_page_renders(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert b"/api/schema/" in response.content
