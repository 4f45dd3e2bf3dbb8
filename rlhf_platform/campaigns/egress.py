"""Judge endpoints are outbound requests from our servers: which ones a campaign may name.

The policy (``ml_worker.core.judges.egress``) is built from the admin-managed allow-list
(:class:`~rlhf_platform.campaigns.models.JudgeHost`) plus the providers' own API hosts. It
is applied twice:

- when a campaign is created (API, spec file, admin): :func:`judge_config_check` refuses a
  host that is not allowed, a host that resolves to a non-public address without an
  admin's permission, and an API key variable that is not an ``*_API_KEY`` name, with a 400
  and a code;
- when the worker calls the judge: the round services build it with
  ``egress=judge_egress_policy()``, so every connection is checked again at connect time
  and goes to the address that passed (DNS rebinding).
"""

from __future__ import annotations

import re
from typing import Any

from ml_worker.core.judges.base import DEFAULT_BASE_URLS
from ml_worker.core.judges.egress import EgressPolicy, EgressRefused
from rlhf_platform.campaigns.models import JudgeHost
from rlhf_platform.errors import InvalidInput

# Always allowed, never private: where the API judges go when no base_url is given.
PROVIDER_HOSTS = {"api.openai.com": False, "generativelanguage.googleapis.com": False}
# A judge config names the environment variable that holds its API key. Without a rule it
# could name SECRET_KEY or DATABASE_URL and send it to the judge host as a bearer token.
API_KEY_ENV = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")


def judge_egress_policy() -> EgressPolicy:
    hosts = dict(PROVIDER_HOSTS)
    hosts.update(JudgeHost.objects.values_list("host", "allow_private_addresses"))
    return EgressPolicy(hosts)


def judge_config_check(judge_config: dict[str, Any] | None) -> None:
    """Refuse a judge config whose endpoint or key variable the platform does not allow."""
    if not isinstance(judge_config, dict) or judge_config.get("kind") not in DEFAULT_BASE_URLS:
        return  # the oracle (or a kind build_judge will refuse) calls nobody
    kind = judge_config["kind"]
    key_env = judge_config.get("api_key_env")
    if key_env is not None and not (isinstance(key_env, str) and API_KEY_ENV.fullmatch(key_env)):
        raise InvalidInput(
            f"judge_config.api_key_env must name a variable like OPENAI_API_KEY "
            f"(capitals, ending in _API_KEY), not {key_env!r}.",
            code="judge_api_key_env_not_allowed",
        )
    base_url = judge_config.get("base_url") or DEFAULT_BASE_URLS[kind]
    if not isinstance(base_url, str):
        raise InvalidInput("judge_config.base_url must be a URL.", code="judge_url_invalid")
    policy = judge_egress_policy()
    try:
        host = policy.check_url(base_url)
        # Resolved now only for the hosts admins listed as public: a provider's host is
        # known, and a host allowed to be private may resolve only inside the workers'
        # network. Every host is resolved and checked again at each connection.
        if host.lower() not in PROVIDER_HOSTS and not policy.check_host(host):
            policy.resolve(host, 443)
    except EgressRefused as exc:
        raise InvalidInput(f"judge_config.base_url: {exc}", code=exc.code) from None
