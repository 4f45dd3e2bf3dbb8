"""The two calls every label costs, next and submit, as an API client makes them: with a
token (issue 21). Their statements are counted exactly, so that a change that adds one shows
up here; what each statement is for is in rlhf_platform/labeling/pg.py."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.labeling.models import Label
from tests.conftest import make_campaign
from tests.rlhf_platform.api.helpers import V1, assert_error, writes_nothing

pytestmark = pytest.mark.django_db


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _statements(ctx: CaptureQueriesContext) -> list[str]:
    """The SQL sent, less the savepoints of the test's own transaction. (Django's query log
    has no text for a prepared statement of labeling/pg.py: None, kept as an entry.)"""
    return [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in (q["sql"] or "")]


@pytest.fixture
def client(annotator):
    return _token_client(annotator)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statements")
def test_next_and_submit_send_few_statements(researcher, annotator, client):
    campaign = make_campaign(
        researcher, pairs=3, members=(annotator,), label_cap=3, human_label_cost=Decimal("0.5")
    )
    next_url = f"{V1}/campaigns/{campaign.pk}/next/"
    with CaptureQueriesContext(connection) as ctx:
        lease = client.post(next_url).json()
    # token + user; campaign, membership and budget; live lease; leases outstanding (the
    # campaign has a label cap); the gold rate (issue 20: cached afterwards, see below); pick,
    # take a slot and write the lease.
    assert len(_statements(ctx)) == 6, _statements(ctx)
    with CaptureQueriesContext(connection) as ctx:
        assert client.post(next_url).json()["lease_id"] == lease["lease_id"]
    assert len(_statements(ctx)) == 3, _statements(ctx)  # token; campaign; the live lease

    body = {"choice": "A", "idempotency_key": "k1"}
    with CaptureQueriesContext(connection) as ctx:
        stored = client.post(f"{V1}/leases/{lease['lease_id']}/label/", body, format="json")
    assert stored.status_code == 201, stored.content
    # token; lock lease and comparison (and look up the key); close both; debit + label +
    # ledger row.
    assert len(_statements(ctx)) == 4, _statements(ctx)
    with CaptureQueriesContext(connection) as ctx:
        replay = client.post(f"{V1}/leases/{lease['lease_id']}/label/", body, format="json")
    assert replay.status_code == 200 and replay.json()["label_id"] == stored.json()["label_id"]
    assert len(_statements(ctx)) == 3, _statements(ctx)  # token; lock; the stored label
    with CaptureQueriesContext(connection) as ctx:
        client.post(next_url).json()
    assert len(_statements(ctx)) == 5, _statements(ctx)  # as the first, the gold rate cached

    label = Label.objects.get()
    budget = Budget.objects.get(campaign=campaign)
    assert (budget.labels_spent, budget.cost_spent) == (1, Decimal("0.5"))
    entry = LedgerEntry.objects.get()
    assert (entry.label_id, entry.amount, entry.annotator_id) == (
        label.pk,
        Decimal("0.5"),
        annotator.pk,
    )
    assert label.cost == Decimal("0.5") and label.lease_id == lease["lease_id"]


def test_a_token_of_an_inactive_user_is_refused(researcher, annotator, client):
    campaign = make_campaign(researcher, members=(annotator,))
    annotator.is_active = False
    annotator.save(update_fields=["is_active"])
    with writes_nothing():
        assert_error(
            client.post(f"{V1}/campaigns/{campaign.pk}/next/"), 401, "authentication_failed"
        )


def test_an_unknown_token_is_refused(researcher, annotator):
    campaign = make_campaign(researcher, members=(annotator,))
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    with writes_nothing():
        assert_error(
            stranger.post(f"{V1}/campaigns/{campaign.pk}/next/"), 401, "authentication_failed"
        )


def test_the_token_authenticates_its_own_user(researcher, annotator, other_annotator):
    campaign = make_campaign(researcher, members=(annotator, other_annotator))
    mine = _token_client(annotator).post(f"{V1}/campaigns/{campaign.pk}/next/").json()
    theirs = _token_client(other_annotator)
    # Another annotator's lease is not found for this token's user.
    assert_error(
        theirs.post(
            f"{V1}/leases/{mine['lease_id']}/label/",
            {"choice": "A", "idempotency_key": "x"},
            format="json",
        ),
        404,
        "lease_not_found",
    )


def test_the_bodies_are_what_their_serializers_give(researcher, annotator, client):
    """next and submit build their JSON without DRF serializers; the documented
    serializers give the same (with chat messages; swapped or not, as the leases fall)."""
    from rlhf_platform.api.labeling import LabelSubmitApi, LeasedOutputSerializer
    from rlhf_platform.labeling.models import Lease
    from rlhf_platform.labeling.selectors import lease_display

    campaign = make_campaign(researcher, pairs=4, members=(annotator,))
    campaign.prompts.update(messages=[{"role": "user", "content": "earlier turn"}])
    for _ in range(4):
        body = client.post(f"{V1}/campaigns/{campaign.pk}/next/").json()
        lease = Lease.objects.select_related(
            "comparison__prompt", "comparison__response_a", "comparison__response_b"
        ).get(pk=body["lease_id"])
        expected = LeasedOutputSerializer({"status": "leased", **lease_display(lease)}).data
        assert body == json.loads(json.dumps(expected))
        assert body["messages"] == [{"role": "user", "content": "earlier turn"}]
        receipt = client.post(
            f"{V1}/leases/{lease.pk}/label/",
            {"choice": "A", "idempotency_key": f"k{lease.pk}"},
            format="json",
        ).json()
        expected = LabelSubmitApi.OutputSerializer(Label.objects.get(pk=receipt["label_id"])).data
        assert receipt == json.loads(json.dumps(expected)) and receipt["choice"] == "A"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's prepared statements")
def test_the_hot_statements_are_prepared_once_per_connection(
    researcher, annotator, client, settings
):
    campaign = make_campaign(researcher, pairs=3, members=(annotator,))
    for _ in range(2):
        lease = client.post(f"{V1}/campaigns/{campaign.pk}/next/").json()
        client.post(
            f"{V1}/leases/{lease['lease_id']}/label/",
            {"choice": "B", "idempotency_key": f"k{lease['lease_id']}"},
            format="json",
        )
    with connection.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cur.fetchall()]
    # token; campaign and budget; live lease; pick and lease; lock; close; debit: each once.
    assert len(prepared) == 7, prepared
    assert sum("WITH pick AS" in p for p in prepared) == 1

    settings.DATABASE_PREPARED_STATEMENTS = False  # e.g. behind a transaction pooler
    with connection.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    connection.connection._prepared.clear()  # psycopg's own record of what it prepared
    lease = client.post(f"{V1}/campaigns/{campaign.pk}/next/").json()
    assert lease["status"] == "leased"
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize(
    ("model", "sql", "table"),
    [
        ("labeling.Label", "SUBMIT_DEBIT", "label"),
        ("labeling.Lease", "LEASE_NEW", "lease"),
        ("budgets.LedgerEntry", "SUBMIT_DEBIT", "ledger"),
    ],
)
def test_every_insert_of_the_hand_written_sql_names_each_required_column(model, sql, table):
    """A field added to the model without a database default must be added to the hand-written
    INSERT too (a new NOT NULL column once made every label a server error)."""
    import re

    from django.apps import apps

    from rlhf_platform.labeling import pg

    text = getattr(pg, sql)
    insert = re.search(rf"INSERT INTO {re.escape(pg._T[table])}\s*\(([^)]*)\)", text, flags=re.S)
    assert insert, f"no INSERT INTO {pg._T[table]} in pg.{sql}"
    named = {c.strip() for c in insert.group(1).split(",")}
    required = {
        f.column
        for f in apps.get_model(model)._meta.concrete_fields
        if not f.null and not f.primary_key and f.db_default is models.NOT_PROVIDED
    }
    assert required <= named, f"pg.{sql} leaves out {sorted(required - named)}"
