from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.rlhf_platform.api.helpers import V1, assert_error, writes_nothing

pytestmark = pytest.mark.django_db

TOKEN_URL = f"{V1}/auth/token/"

# Every endpoint of /api/v1/ that needs a caller, with the method it answers.
PROTECTED = [
    ("get", "/campaigns/"),
    ("post", "/campaigns/"),
    ("get", "/campaigns/{c}/"),
    ("post", "/campaigns/{c}/state/"),
    ("post", "/campaigns/{c}/members/"),
    ("post", "/campaigns/{c}/prompts/import/"),
    ("get", "/campaigns/{c}/progress/"),
    ("post", "/campaigns/{c}/next/"),
    ("post", "/leases/1/label/"),
    ("post", "/leases/1/skip/"),
    ("post", "/leases/1/renew/"),
]


class TestToken:
    def test_it_returns_a_token_for_good_credentials(self, annotator):
        response = APIClient().post(
            TOKEN_URL, {"username": "anna", "password": "pw-anna"}, format="json"
        )
        assert response.status_code == 200
        body = response.json()
        assert body == {
            "token": Token.objects.get(user=annotator).key,
            "username": "anna",
            "role": "annotator",
        }

    def test_it_returns_the_same_token_twice(self, annotator):
        client = APIClient()
        creds = {"username": "anna", "password": "pw-anna"}
        first = client.post(TOKEN_URL, creds, format="json").json()["token"]
        second = client.post(TOKEN_URL, creds, format="json").json()["token"]
        assert first == second and Token.objects.count() == 1

    def test_the_token_authenticates_api_calls(self, annotator, campaign):
        token = APIClient().post(
            TOKEN_URL, {"username": "anna", "password": "pw-anna"}, format="json"
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
        response = client.get(f"{V1}/campaigns/")
        assert response.status_code == 200
        assert [c["name"] for c in response.json()["results"]] == ["Helpfulness"]

    def test_it_accepts_a_form_post(self, annotator):
        response = APIClient().post(
            TOKEN_URL,
            data="username=anna&password=pw-anna",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "creds",
        [
            {"username": "anna", "password": "wrong"},
            {"username": "nobody", "password": "pw-anna"},
        ],
    )
    def test_it_rejects_bad_credentials_and_writes_no_token(self, annotator, creds):
        response = APIClient().post(TOKEN_URL, creds, format="json")
        assert_error(response, 400, "invalid_credentials")
        assert Token.objects.count() == 0

    def test_it_rejects_an_inactive_user(self, annotator):
        annotator.is_active = False
        annotator.save()
        response = APIClient().post(
            TOKEN_URL, {"username": "anna", "password": "pw-anna"}, format="json"
        )
        assert_error(response, 400, "invalid_credentials")

    def test_missing_fields_are_a_validation_error(self, db):
        body = assert_error(
            APIClient().post(TOKEN_URL, {"username": "anna"}, format="json"),
            400,
            "validation_error",
        )
        assert "password" in body["details"]

    def test_malformed_json_is_rejected(self, db):
        response = APIClient().post(
            TOKEN_URL, data='{"username": "anna",', content_type="application/json"
        )
        assert_error(response, 400, "malformed_request")


class TestUnauthenticated:
    @pytest.mark.parametrize("method,path", PROTECTED)
    def test_it_answers_401_with_the_json_error(self, campaign, method, path):
        url = V1 + path.format(c=campaign.pk)
        with writes_nothing():
            response = getattr(APIClient(), method)(url, {}, format="json")
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"

    def test_a_bad_token_is_refused(self, campaign):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        assert_error(client.get(f"{V1}/campaigns/"), 401, "authentication_failed")


class TestSession:
    def test_a_logged_in_session_reaches_the_api(self, annotator, campaign):
        client = APIClient()
        assert client.login(username="anna", password="pw-anna")
        assert client.get(f"{V1}/campaigns/{campaign.pk}/").status_code == 200

    def test_a_session_post_without_csrf_token_is_refused(self, annotator, campaign):
        client = APIClient(enforce_csrf_checks=True)
        client.login(username="anna", password="pw-anna")
        with writes_nothing():
            response = client.post(f"{V1}/campaigns/{campaign.pk}/next/")
        body = assert_error(response, 403, "permission_denied")
        assert "CSRF" in body["message"]


class TestUnknownEndpoints:
    @pytest.mark.parametrize("path", ["/api/v1/", "/api/v1/nope/", "/api/v1/campaigns/x/"])
    def test_an_unknown_path_is_a_json_404(self, db, path):
        assert_error(APIClient().get(path), 404, "unknown_endpoint")

    def test_a_wrong_method_is_a_json_405(self, client_for, annotator, campaign):
        response = client_for(annotator).get(f"{V1}/campaigns/{campaign.pk}/next/")
        assert_error(response, 405, "method_not_allowed")
