"""Browser pages during a database outage answer 503 and retry by themselves; other
unhandled errors answer a plain 500 page. Neither page touches the database or leaks the
exception."""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def page_client(annotator) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(annotator)
    return client


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("terminating connection due to administrator command"),
        InterfaceError("connection already closed"),
    ],
)
def test_a_page_during_a_database_outage_is_a_503_that_retries(page_client, monkeypatch, exc):
    def down(user):
        raise exc

    monkeypatch.setattr("annotator_ui.views.campaigns_for_annotator", down)
    response = page_client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    body = response.content.decode()
    assert "Briefly unavailable" in body
    assert '<meta http-equiv="refresh" content="2">' in body
    assert "administrator command" not in body and "connection already closed" not in body
    assert "Content-Security-Policy" in response.headers  # still the pages' headers


def test_any_other_unhandled_page_error_is_a_plain_500(page_client, monkeypatch):
    def broken(user):
        raise RuntimeError("secret detail")

    monkeypatch.setattr("annotator_ui.views.campaigns_for_annotator", broken)
    response = page_client.get("/")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    body = response.content.decode()
    assert "Something went wrong on our side" in body
    assert "secret detail" not in body
