"""OpenAPI fuzzing: schemathesis generates requests for every operation of
``/api/schema/`` and sends them to the app (through WSGI, on the real test database).

Every response must be free of server errors and match the schema: a documented status
code, the documented content type, a body valid against the documented schema, and a
request the schema calls invalid must be refused (``negative_data_rejection``: ``offset=null``
and a 201-character name were accepted before issue 18). A failure is fixed where it arises
(a serializer, the schema annotations), never by loosening a check.

Two kinds of run, each as an annotator member and as the researcher who owns the campaign:

- **stateless**: every operation on its own; half of the generated ids are replaced by the
  campaign's, lease's and round's ids so that not everything is a 404;
- **stateful**: schemathesis chains operations through the schema's OpenAPI links
  (``rlhf_platform/api/links.py``): list or create a campaign, lease its next comparison,
  label, skip or renew that lease, list rounds and retry one. This is what reaches the
  endpoints behind real ids (next, label, skip, renew, members, retry).

The requests sent per operation and the statuses they got are printed at the end of the
module. Examples are limited to keep the run to about a minute (``MAX_EXAMPLES``).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rlhf_platform.accounts.models import Role
from rlhf_platform.labeling.services import comparison_next
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.state import round_fail
from tests.conftest import make_campaign, make_user

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# CI runs a fixed, derandomized sample (about a minute); FUZZ_EXAMPLES=500 runs a longer,
# random search on a developer's machine.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "60"))
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ
ROLES = ("annotator", "researcher")
LEASE_VERBS = ("label", "skip", "renew")
# Where a stateful scenario may start: the campaign list, which needs no id. (Starting from
# a creation gives a draft campaign with nothing to lease; creation is fuzzed statelessly.)
ROOTS = {"annotator": {"GET /api/v1/campaigns/"}, "researcher": {"GET /api/v1/campaigns/"}}

# Loaded once, when the module is collected: the schema view reads no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())

# (run, role) -> operation -> statuses seen; printed by `_report` at the end of the module.
SEEN: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not SEEN:
        return
    lines = ["", "API fuzzing: requests per operation (statuses)"]
    for (run, role), operations in sorted(SEEN.items()):
        total = sum(sum(c.values()) for c in operations.values())
        lines.append(f"  {run}, {role}'s token: {total} requests")
        for label, statuses in sorted(operations.items()):
            counts = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
            lines.append(f"    {label:55} {sum(statuses.values()):5}  ({counts})")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


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
    """A running campaign owned by a researcher, who labels in it too, with an annotator
    member; each holds a lease, and the campaign has a failed round to retry."""
    researcher = make_user("rita", Role.RESEARCHER)
    annotator = make_user("anna")
    campaign = make_campaign(researcher, pairs=40, members=(researcher, annotator))
    leases = {
        role: comparison_next(annotator=user, campaign_id=campaign.pk).lease
        for role, user in (("researcher", researcher), ("annotator", annotator))
    }
    rnd = Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)
    round_fail(round_id=rnd.pk, reason="out of memory")
    return {
        role: {
            "token": Token.objects.create(user=user).key,
            "ids": {"campaign_id": campaign.pk, "lease_id": leases[role].pk, "round_id": rnd.pk},
        }
        for role, user in (("researcher", researcher), ("annotator", annotator))
    }


class _RootsOnly:
    """schemathesis's transition controller, allowing scenarios to start only at roots."""

    def __init__(self, control, roots: set[str]):
        self._control, self._roots = control, roots

    def allow_root_transition(self, label, bundles):
        return label in self._roots and self._control.allow_root_transition(label, bundles)

    def __getattr__(self, name):
        return getattr(self._control, name)


def _record(run: str, role: str, case, response) -> None:
    SEEN[(run, role)][case.operation.label][response.status_code] += 1


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=DERANDOMIZE,
)
def test_the_api_answers_every_generated_request_as_documented(case, fuzz_world, role):
    world = fuzz_world[role]
    for name, value in (case.path_parameters or {}).items():
        if name in world["ids"] and isinstance(value, int) and value % 2 == 0:
            case.path_parameters[name] = world["ids"][name]
    headers = {"Authorization": f"Token {world['token']}"}
    response = case.call(headers=headers)
    _record("stateless", role, case, response)
    case.validate_response(response, checks=CHECKS, headers=headers)


@pytest.mark.parametrize("role", ROLES)
def test_stateful_sequences_follow_the_links_as_documented(fuzz_world, role):
    world = fuzz_world[role]
    headers = {"Authorization": f"Token {world['token']}"}

    class Machine(schema.as_state_machine()):
        # Every scenario starts from the same database (a savepoint rolled back at its
        # end): Hypothesis requires the same draws to meet the same state.
        def setup(self):
            self._savepoint = transaction.savepoint()
            # Start every scenario from an operation that needs no id (list or create a
            # campaign); everything after it follows the links. schemathesis would also
            # start from any POST, with a random id: a 404 that tests nothing new.
            self.control = _RootsOnly(self.control, ROOTS[role])

        def teardown(self):
            transaction.savepoint_rollback(self._savepoint)

        def get_call_kwargs(self, case):
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            _record("stateful", role, case, response)
            case.validate_response(response, checks=CHECKS, headers=headers)

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=DERANDOMIZE,
            stateful_step_count=6,
            # The database is not reset between examples, so a replay is not the same
            # run: report the failure as found instead of shrinking it.
            phases=[Phase.explicit, Phase.generate],
        )
    )
    # The links led to real ids: `next` leased a comparison of the campaign it was linked
    # from, and the lease was then used. (Which lease operations follow varies between
    # runs: schemathesis draws links with true randomness.)
    seen = SEEN[("stateful", role)]
    assert seen["POST /api/v1/campaigns/{campaign_id}/next/"][200] > 0, dict(seen)
    lease_operations = [f"POST /api/v1/leases/{{lease_id}}/{verb}/" for verb in LEASE_VERBS]
    assert sum(sum(seen[op].values()) for op in lease_operations) > 0, dict(seen)
