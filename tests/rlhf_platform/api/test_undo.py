"""POST /api/v1/labels/<id>/undo/."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from rlhf_platform.labeling.models import Label
from tests.rlhf_platform.api.helpers import assert_error

pytestmark = pytest.mark.django_db


def _label(client, campaign, choice="A"):
    served = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    answer = client.post(
        f"/api/v1/leases/{served['lease_id']}/label/",
        {"choice": choice, "idempotency_key": f"k{served['lease_id']}"},
        format="json",
    )
    assert answer.status_code == 201
    return served, answer.json()


def test_undo_returns_the_same_pair_in_the_same_order(client_for, annotator, campaign):
    client = client_for(annotator)
    served, label = _label(client, campaign)
    response = client.post(f"/api/v1/labels/{label['label_id']}/undo/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "leased" and body["lease_id"] == served["lease_id"]
    assert (body["response_a"], body["response_b"]) == (served["response_a"], served["response_b"])
    relabel = client.post(
        f"/api/v1/leases/{served['lease_id']}/label/",
        {"choice": "B", "idempotency_key": "again"},
        format="json",
    )
    assert relabel.status_code == 201 and relabel.json()["choice"] == "B"


def test_undo_errors(client_for, annotator, other_annotator, campaign):
    client = client_for(annotator)
    _, label = _label(client, campaign)
    assert_error(
        client_for(other_annotator).post(f"/api/v1/labels/{label['label_id']}/undo/"),
        404,
        "label_not_found",
    )
    Label.objects.filter(pk=label["label_id"]).update(
        created_at=timezone.now() - dt.timedelta(minutes=5)
    )
    assert_error(
        client.post(f"/api/v1/labels/{label['label_id']}/undo/"), 409, "undo_window_passed"
    )
