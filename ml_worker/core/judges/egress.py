"""Where API judges may connect: an allow-list of hosts, and no private addresses.

A judge's ``base_url`` is chosen by whoever configures the campaign, but the request leaves
from our workers, inside our network. Unchecked, a judge config could point at the cloud
metadata service (169.254.169.254), the database, Redis, or any internal HTTP service
(server-side request forgery), and the judge would send it our API key and prompts.

`EgressPolicy` says which hosts a judge may reach (``allowed_hosts``: host name to "may
resolve to private addresses"). `EgressPolicy.resolve` resolves a host and checks *every*
address it resolves to: an address that is not globally routable (private, loopback,
link-local, shared, reserved, multicast, unspecified) is refused unless the host is
explicitly allowed to have them.

Checking a URL when the campaign is saved is not enough: DNS can answer differently a
second later (DNS rebinding). `guarded_http_client` returns an ``httpx.Client`` whose
connections go through the same check at connect time, and connect to the very address that
passed it, so what was checked is what is connected to. It does not read proxy settings from
the environment (a proxy would connect on our behalf, past the check).

Pure Python, no Django: the platform builds the policy from its admin-managed allow-list.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ml_worker.core.judges.base import JudgeConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(JudgeConfigError):
    """A judge endpoint that the egress policy does not allow. ``code`` says why."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def normalize_host(host: str) -> str:
    return host.strip().rstrip(".").lower().removeprefix("[").removesuffix("]")


def is_public_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global and not ip.is_multicast


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class EgressPolicy:
    """``allowed_hosts`` maps a lower-case host name (or IP literal) to whether it may
    resolve to non-public addresses."""

    allowed_hosts: Mapping[str, bool] = field(default_factory=dict)

    def check_host(self, host: str) -> bool:
        """Whether ``host`` may have private addresses; raises if it is not allowed at all."""
        name = normalize_host(host)
        if name not in self.allowed_hosts:
            raise EgressRefused(
                f"judge host {name!r} is not on the allow-list of judge hosts; "
                "an admin must add it",
                code="judge_host_not_allowed",
            )
        return self.allowed_hosts[name]

    def check_url(self, url: str) -> str:
        """The URL's host, if its scheme is http(s) and its host is allowed (no DNS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused(
                f"judge base_url {url!r} must be an http:// or https:// URL with a host",
                code="judge_url_invalid",
            )
        if parts.username or parts.password:
            raise EgressRefused(
                "judge base_url must not carry credentials; name an API key variable instead",
                code="judge_url_invalid",
            )
        self.check_host(parts.hostname)
        return parts.hostname

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, all checked; raises `EgressRefused` otherwise."""
        private_ok = self.check_host(host)
        name = normalize_host(host)
        try:
            addresses = _getaddrinfo(name, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise EgressRefused(
                f"judge host {name!r} does not resolve: {exc}", code="judge_host_unresolvable"
            ) from None
        if not addresses:
            raise EgressRefused(
                f"judge host {name!r} does not resolve", code="judge_host_unresolvable"
            )
        if not private_ok:
            bad = [a for a in addresses if not is_public_address(ipaddress.ip_address(a))]
            if bad:
                raise EgressRefused(
                    f"judge host {name!r} resolves to non-public address(es) {bad}; an admin "
                    "must allow private addresses for this host",
                    code="judge_host_private",
                )
        return addresses


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves and checks at connect time, then connects to a checked address."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None  # noqa: S101 (resolve returns at least one address)
        raise last


def guarded_http_client(policy: EgressPolicy, *, timeout: float) -> httpx.Client:
    """An ``httpx.Client`` that connects only where ``policy`` allows, checked per
    connection. TLS still verifies the certificate against the host *name*."""
    transport = httpx.HTTPTransport()
    # httpx builds its connection pool with the default network backend and has no
    # argument for another; tests/security/test_judge_egress.py proves this one is used.
    transport._pool._network_backend = _GuardedBackend(policy)
    return httpx.Client(timeout=timeout, transport=transport, trust_env=False)
