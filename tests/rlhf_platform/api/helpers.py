"""API test helpers: the error assertion and a "nothing written" check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.campaigns.models import Campaign, Membership, Prompt
from rlhf_platform.labeling.models import Comparison, Label, Lease

V1 = "/api/v1"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def snapshot() -> dict:
    """Every row an API call could write, in a comparable form."""
    return {
        "campaigns": list(Campaign.objects.order_by("pk").values_list("pk", "name", "state")),
        "members": list(Membership.objects.order_by("pk").values_list("pk")),
        "prompts": Prompt.objects.count(),
        "comparisons": list(
            Comparison.objects.order_by("pk").values_list(
                "pk", "state", "labels_count", "leased_count"
            )
        ),
        "leases": list(
            Lease.objects.order_by("pk").values_list("pk", "state", "expires_at", "closed_at")
        ),
        "labels": Label.objects.count(),
        "ledger": LedgerEntry.objects.count(),
        "budgets": list(
            Budget.objects.order_by("pk").values_list("pk", "labels_spent", "cost_spent")
        ),
    }


@contextmanager
def writes_nothing() -> Iterator[None]:
    before = snapshot()
    yield
    assert snapshot() == before
