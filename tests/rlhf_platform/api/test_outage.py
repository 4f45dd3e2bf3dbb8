"""A database outage is a retryable 503, never a 500 (found by bench/soak restarting PostgreSQL).

The soak restarts a real PostgreSQL under load; here the same errors (what psycopg raises
when the server is gone or shutting down) are raised inside the request, at the points the
soak hit them: authentication, leasing, and in the middle of a submit's transaction.
"""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError, connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rlhf_platform.api.authentication import TokenAuthentication
from rlhf_platform.labeling import pg as labeling_pg
from rlhf_platform.labeling import services as labeling_services
from rlhf_platform.labeling.models import Label
from tests.conftest import make_campaign
from tests.rlhf_platform.api.helpers import V1, assert_error, writes_nothing

pytestmark = pytest.mark.django_db

GONE = OperationalError("terminating connection due to administrator command")


def _outage(response) -> None:
    body = assert_error(response, 503, "service_unavailable")
    assert "Traceback" not in body["message"]
    assert response["Retry-After"].isdigit()


@pytest.fixture
def token_client(annotator) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=annotator).key}")
    return client


def test_next_comparison_during_an_outage_is_503(researcher, annotator, token_client, monkeypatch):
    campaign = make_campaign(researcher, members=(annotator,))

    def down(**kwargs):
        raise GONE

    monkeypatch.setattr("rlhf_platform.api.labeling.comparison_next", down)
    with writes_nothing():
        _outage(token_client.post(f"{V1}/campaigns/{campaign.pk}/next/"))


def test_token_check_during_an_outage_is_503_not_401_or_500(annotator, token_client, monkeypatch):
    def down(self, key):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(TokenAuthentication, "authenticate_credentials", down)
    _outage(token_client.get(f"{V1}/campaigns/"))


def test_a_submit_cut_off_mid_transaction_is_503_writes_nothing_and_can_be_retried(
    researcher, annotator, token_client, monkeypatch
):
    campaign = make_campaign(researcher, members=(annotator,))
    lease_id = token_client.post(f"{V1}/campaigns/{campaign.pk}/next/").json()["lease_id"]
    body = {"choice": "A", "idempotency_key": "retry-me"}
    # The debit is the last write: on PostgreSQL the one statement of labeling/pg.py that
    # stores the label, its ledger row and the debit; elsewhere budget_debit after the label.
    module, name = (
        (labeling_pg, "submit_debit")
        if connection.vendor == "postgresql"
        else (labeling_services, "budget_debit")
    )
    real_debit = getattr(module, name)

    def debit_then_lose_the_server(**kwargs):
        real_debit(**kwargs)  # the label row is written; then the connection drops
        raise GONE

    monkeypatch.setattr(module, name, debit_then_lose_the_server)
    with writes_nothing():
        _outage(token_client.post(f"{V1}/leases/{lease_id}/label/", body, format="json"))
    monkeypatch.setattr(module, name, real_debit)

    stored = token_client.post(f"{V1}/leases/{lease_id}/label/", body, format="json")
    assert stored.status_code == 201, stored.content
    replay = token_client.post(f"{V1}/leases/{lease_id}/label/", body, format="json")
    assert replay.status_code == 200 and replay.json()["label_id"] == stored.json()["label_id"]
    assert Label.objects.filter(annotator=annotator).count() == 1
