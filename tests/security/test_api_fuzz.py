"""OpenAPI fuzzing: schemathesis generates requests for every operation of
``/api/schema/`` and sends them to the app (through WSGI, on the real test database).

Every response must be free of server errors and match the schema: a documented status
code, the documented content type, a body valid against the documented schema. A failure
is fixed where it arises (a serializer, the schema annotations), never by loosening a check.

The caller is an admin who is also a member of the campaign and holds a lease on it, so
generated requests reach the code behind the access checks; half of the generated ids are
replaced by that campaign's, lease's and round's ids so that not everything is a 404.
Examples per operation are limited to keep the run to about a minute (see MAX_EXAMPLES).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rlhf_platform.accounts.models import Role
from rlhf_platform.campaigns.models import Round, RoundState
from rlhf_platform.labeling.services import comparison_next
from rlhf_platform.rounds.state import round_fail
from tests.conftest import make_campaign, make_user

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# CI runs a fixed, derandomized sample (about a minute); FUZZ_EXAMPLES=500 runs a longer,
# random search on a developer's machine.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ


# Loaded once, when the module is collected: the schema view reads no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """The test runs in one transaction; Django closes the connection after each request
    unless told not to (its own test client does the same)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(db):
    admin = make_user("ada", Role.ADMIN, is_staff=True, is_superuser=True)
    annotator = make_user("anna")
    campaign = make_campaign(admin, pairs=20, members=(admin, annotator))
    lease = comparison_next(annotator=admin, campaign_id=campaign.pk).lease
    rnd = Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)
    round_fail(round_id=rnd.pk, reason="out of memory")
    return {
        "token": Token.objects.create(user=admin).key,
        "ids": {"campaign_id": campaign.pk, "lease_id": lease.pk, "round_id": rnd.pk},
    }


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=DERANDOMIZE,
)
def test_the_api_answers_every_generated_request_as_documented(case, fuzz_world):
    for name, value in (case.path_parameters or {}).items():
        if name in fuzz_world["ids"] and isinstance(value, int) and value % 2 == 0:
            case.path_parameters[name] = fuzz_world["ids"][name]
    case.call_and_validate(headers={"Authorization": f"Token {fuzz_world['token']}"}, checks=CHECKS)
