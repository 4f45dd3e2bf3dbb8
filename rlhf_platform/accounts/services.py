"""Login rate limiting, shared by the API token endpoint and the HTML login page.

Failed logins are counted in Django's cache (``settings.CACHES``: Redis in production, so
every web process sees the same counts) in two fixed windows of
``LOGIN_FAILURE_WINDOW_SECONDS`` that start at the first failure:

- per username and client address: ``LOGIN_FAILURE_LIMIT`` failures (guessing one
  account's password);
- per client address: ``LOGIN_IP_FAILURE_LIMIT`` failures (trying one password on many
  accounts).

Once a count reaches its limit, further attempts are refused with 429
``too_many_login_attempts`` *before* the password is checked, so a right password does not
get through either until the window ends. There is deliberately no limit per username
alone: anyone could then lock any account out by failing on purpose. A successful login
clears its username-and-address count.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from rlhf_platform.errors import ServiceError


class LoginRateLimited(ServiceError):
    code = "too_many_login_attempts"
    status = 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def client_ip(request: HttpRequest) -> str:
    """The client's address: the one our own proxy appended to ``X-Forwarded-For`` when
    ``BEHIND_PROXY`` is set (earlier entries are the client's to forge), else the peer's."""
    if settings.BEHIND_PROXY:
        forwarded: str = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _digest(*parts: str) -> str:
    # Usernames may hold any character; a digest makes a short, safe cache key.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def _keys(username: str, ip: str) -> tuple[str, str]:
    return (
        f"login-failures:user-ip:{_digest(username.casefold(), ip)}",
        f"login-failures:ip:{_digest(ip)}",
    )


def login_attempt_check(*, username: str, ip: str) -> None:
    """Raise :class:`LoginRateLimited` if this username and address may not try now."""
    user_key, ip_key = _keys(username, ip)
    counts = cache.get_many([user_key, ip_key])
    if (
        counts.get(user_key, 0) >= settings.LOGIN_FAILURE_LIMIT
        or counts.get(ip_key, 0) >= settings.LOGIN_IP_FAILURE_LIMIT
    ):
        window = settings.LOGIN_FAILURE_WINDOW_SECONDS
        raise LoginRateLimited(
            f"Too many failed logins. Try again in {max(1, window // 60)} minutes.",
            retry_after=window,
        )


def login_failure_record(*, username: str, ip: str) -> None:
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    for key in _keys(username, ip):
        cache.add(key, 0, timeout=window)  # starts the window; no-op if it runs already
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)


def login_success_reset(*, username: str, ip: str) -> None:
    cache.delete(_keys(username, ip)[0])
