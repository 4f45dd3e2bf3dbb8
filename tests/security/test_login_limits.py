"""Login rate limiting: the API token endpoint and the login page share the counts."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from rlhf_platform.accounts.models import User
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"


@pytest.fixture
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_IP_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 600
    return settings


@pytest.fixture
def anna(db) -> User:
    return make_user("anna")


def _token(client: APIClient, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=ip
    )


def test_it_refuses_token_logins_with_429_after_too_many_failures(limits, anna):
    client = APIClient()
    for _ in range(3):
        assert _token(client, "anna", "wrong").json()["code"] == "invalid_credentials"
    response = _token(client, "anna", "pw-anna")  # even the right password, until it ends
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "too_many_login_attempts"
    assert set(body) == {"code", "message"} and "Try again" in body["message"]
    assert response["Retry-After"] == "600"


def test_the_limit_is_per_username_and_address(limits, anna):
    make_user("otto")
    client = APIClient()
    for _ in range(3):
        _token(client, "anna", "wrong", ip="10.0.0.1")
    assert _token(client, "anna", "pw-anna", ip="10.0.0.2").status_code == 200
    assert _token(client, "otto", "pw-otto", ip="10.0.0.1").status_code == 200


def test_a_success_clears_the_count(limits, anna):
    client = APIClient()
    for _ in range(2):
        _token(client, "anna", "wrong")
    assert _token(client, "anna", "pw-anna").status_code == 200
    for _ in range(2):
        _token(client, "anna", "wrong")
    assert _token(client, "anna", "pw-anna").status_code == 200


def test_spraying_many_usernames_from_one_address_is_limited(limits, anna):
    client = APIClient()
    for i in range(5):
        _token(client, f"user{i}", "Winter2026!")
    assert _token(client, "anna", "pw-anna").json()["code"] == "too_many_login_attempts"


def test_the_login_page_answers_429_and_shares_the_counts(limits, anna):
    api = APIClient()
    for _ in range(2):
        _token(api, "anna", "wrong")
    page = Client(REMOTE_ADDR="10.0.0.1")
    response = page.post("/login/", {"username": "anna", "password": "wrong"})
    assert response.status_code == 200  # the form again, with its error
    response = page.post("/login/", {"username": "anna", "password": "pw-anna"})
    assert response.status_code == 429
    assert response["Retry-After"] == "600"
    assert b'data-code="too_many_login_attempts"' in response.content
    assert "_auth_user_id" not in page.session  # not logged in


def test_the_login_page_logs_in_below_the_limit(limits, anna):
    page = Client(REMOTE_ADDR="10.0.0.1")
    page.post("/login/", {"username": "anna", "password": "wrong"})
    response = page.post("/login/", {"username": "anna", "password": "pw-anna"})
    assert response.status_code == 302
    assert page.session["_auth_user_id"] == str(anna.pk)


def test_behind_a_proxy_the_address_is_the_one_the_proxy_appended(limits, anna, settings):
    settings.BEHIND_PROXY = True
    client = APIClient()
    for i in range(3):
        # A client forging the first X-Forwarded-For entry still lands in the same count.
        client.post(
            TOKEN,
            {"username": "anna", "password": "wrong"},
            format="json",
            REMOTE_ADDR="10.9.9.9",
            HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.7",
        )
    response = client.post(
        TOKEN,
        {"username": "anna", "password": "pw-anna"},
        format="json",
        REMOTE_ADDR="10.9.9.9",
        HTTP_X_FORWARDED_FOR="203.0.113.7",
    )
    assert response.status_code == 429
