"""Judge endpoints: only admin-allowed hosts, no private addresses unless an admin says so,
checked when the campaign is created and again at every connection (DNS rebinding).

DNS is the outside world here: tests replace the resolver of the egress module
(``_getaddrinfo``) with a fake. The "internal service" a hostile config aims at is a real
HTTP server on 127.0.0.1, which must receive nothing.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from rest_framework.test import APIClient

from ml_worker.core.judges import JudgeQuery, build_judge
from ml_worker.core.judges.egress import EgressPolicy, EgressRefused
from rlhf_platform.accounts.models import Role
from rlhf_platform.campaigns.egress import judge_egress_policy
from rlhf_platform.campaigns.models import Campaign, JudgeHost
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.216.34"


@pytest.fixture
def researcher(db):
    return make_user("rita", Role.RESEARCHER)


@pytest.fixture
def dns(monkeypatch):
    """A fake resolver: host -> list of answers, one list per lookup (the last repeats)."""
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []

    def fake(host: str, port: int) -> list[str]:
        lookups.append(host)
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        if host not in answers:
            import socket

            raise socket.gaierror(-2, "Name or service not known")
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr("ml_worker.core.judges.egress._getaddrinfo", fake)
    return answers


def _create(user, judge_config: dict):
    client = APIClient()
    client.force_authenticate(user)
    return client.post(
        "/api/v1/campaigns/", {"name": "Judged", "judge_config": judge_config}, format="json"
    )


def _openai(base_url: str | None = None, **extra) -> dict:
    config = {"kind": "openai", "model": "judge-model", **extra}
    if base_url:
        config["base_url"] = base_url
    return config


def _error(response, code: str) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code, response.json()
    assert not Campaign.objects.filter(name="Judged").exists()


def test_a_host_not_on_the_allow_list_is_refused(researcher, dns):
    _error(_create(researcher, _openai("https://judge.evil.example/v1")), "judge_host_not_allowed")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",  # Redis
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]:5432/",  # PostgreSQL over IPv6 loopback
        "http://10.0.0.7/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://localhost:8000/v1",
    ],
)
def test_private_addresses_are_refused_even_when_the_host_is_listed(researcher, dns, url):
    host = url.split("//")[1].split("/")[0].rsplit(":", 1)[0] if "[" not in url else None
    host = host or url.split("[")[1].split("]")[0]
    JudgeHost.objects.create(host=host)
    dns["localhost"] = [["127.0.0.1", "::1"]]
    _error(_create(researcher, _openai(url)), "judge_host_private")


def test_every_resolved_address_is_checked(researcher, dns):
    JudgeHost.objects.create(host="judge.example.org")
    dns["judge.example.org"] = [[PUBLIC, "10.1.2.3"]]
    _error(_create(researcher, _openai("https://judge.example.org/v1")), "judge_host_private")


def test_a_listed_public_host_is_accepted(researcher, dns):
    JudgeHost.objects.create(host="Judge.Example.org.")  # stored normalized
    dns["judge.example.org"] = [[PUBLIC]]
    response = _create(researcher, _openai("https://judge.example.org/v1"))
    assert response.status_code == 201, response.content


def test_an_admin_may_allow_a_private_host(researcher, dns):
    JudgeHost.objects.create(host="vllm.internal", allow_private_addresses=True)
    response = _create(researcher, _openai("http://vllm.internal:8000/v1", api_key_env=None))
    assert response.status_code == 201, response.content


def test_the_providers_default_hosts_need_no_listing(researcher, dns):
    response = _create(researcher, _openai())
    assert response.status_code == 201, response.content
    assert response.json()["judge_config"] == _openai()


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://judge.example.org/", "https://user:pw@api.openai.com/v1"],
)
def test_urls_that_are_not_plain_http_are_refused(researcher, dns, url):
    _error(_create(researcher, _openai(url)), "judge_url_invalid")


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "openai_api_key", "AWS_SECRET"])
def test_the_api_key_variable_must_be_an_api_key_name(researcher, dns, name):
    _error(_create(researcher, _openai(api_key_env=name)), "judge_api_key_env_not_allowed")


def test_the_admin_form_applies_the_same_check(dns):
    admin = make_user("ada", Role.ADMIN, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/campaigns/campaign/add/",
        {
            "name": "Admin judged",
            "owner": admin.pk,
            "judge_config": json.dumps(_openai("http://169.254.169.254/")),
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert b"allow-list of judge hosts" in response.content


# --- At call time ---------------------------------------------------------------------------


class _Internal(BaseHTTPRequestHandler):
    """An internal service that also happens to speak the chat completions protocol."""

    requests: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": "judge-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": '{"choice": "A"}'},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def internal_service():
    _Internal.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Internal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Internal.requests
    server.shutdown()
    server.server_close()


def _ask(policy: EgressPolicy, port: int, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = _openai(f"http://judge.example.org:{port}/v1", max_attempts=1, json_mode=False)
    judge = build_judge(config, egress=policy)
    try:
        return judge.judge([JudgeQuery("Which is better?", "this", "that")])[0]
    finally:
        judge.close()


def test_dns_rebinding_after_the_check_reaches_nothing(
    researcher, dns, internal_service, monkeypatch
):
    port, requests = internal_service
    JudgeHost.objects.create(host="judge.example.org")
    # Public when the campaign is saved, loopback when the worker connects.
    dns["judge.example.org"] = [[PUBLIC], ["127.0.0.1"]]
    assert _create(researcher, _openai(f"http://judge.example.org:{port}/v1")).status_code == 201
    # A config error, not a transient one: the round fails with this reason, no retries.
    with pytest.raises(EgressRefused) as info:
        _ask(judge_egress_policy(), port, monkeypatch)
    assert info.value.code == "judge_host_private"
    assert requests == []


def test_the_guard_lets_through_what_an_admin_allowed(dns, internal_service, monkeypatch):
    """The control of the test above: the same call reaches the server when allowed."""
    port, requests = internal_service
    JudgeHost.objects.create(host="judge.example.org", allow_private_addresses=True)
    dns["judge.example.org"] = [["127.0.0.1"]]
    result = _ask(judge_egress_policy(), port, monkeypatch)
    assert result.valid and result.choice == "A"
    assert requests == ["/v1/chat/completions"]


def test_a_host_removed_from_the_list_is_refused_when_the_judge_is_built(dns):
    with pytest.raises(EgressRefused) as info:
        build_judge(_openai("https://gone.example.org/v1"), egress=judge_egress_policy())
    assert info.value.code == "judge_host_not_allowed"
