"""Typed, loud settings from the environment.

Every reader raises :class:`ImproperlyConfigured` naming the variable when its value is
bad, so a typo stops the process at start instead of silently disabling a limit.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from dj_database_url import DBConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().upper()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# The embedded quickstart runs a web server and a worker on one SQLite file. WAL lets
# readers (a login page, a lease) read while the worker writes; a writer waits up to
# `timeout` seconds for another's lock instead of failing at once; IMMEDIATE takes the
# write lock at BEGIN, so two writers queue instead of deadlocking on an upgrade. No worker
# holds a transaction while it loads or runs a model (rlhf_platform/rounds/), so waits are
# short (tests/rlhf_platform/test_sqlite_demo.py).
SQLITE_OPTIONS = {
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def database_config(name: str, default_sqlite: Path) -> DBConfig:
    """Parse ``DATABASE_URL``; only PostgreSQL and SQLite are supported."""
    import dj_database_url

    raw = os.environ.get(name)
    if not raw:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(default_sqlite),
            "OPTIONS": SQLITE_OPTIONS,
        }
    try:
        config = dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
        raise ImproperlyConfigured(
            f"{name} names an unsupported database ({engine or 'unknown scheme'}); "
            "use postgres://... or sqlite:///..."
        )
    if engine == "django.db.backends.sqlite3":
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    return config


def broker_url(name: str) -> str:
    """The broker URL; default: kombu's filesystem transport (folders set in settings)."""
    raw = os.environ.get(name)
    if raw:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory"):
            raise ImproperlyConfigured(
                f"{name}={raw!r} has an unsupported scheme; use redis://, amqp:// or filesystem://"
            )
        return raw
    return "filesystem://localhost//"  # a hostname keeps kombu from warning at every start


def secret_key(name: str, key_file: Path) -> str:
    """The key from the environment, else one generated once into ``key_file``."""
    raw = os.environ.get(name)
    if raw is not None:
        if len(raw) < 32:
            raise ImproperlyConfigured(f"{name} must be at least 32 characters long")
        return raw
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # O_EXCL: two processes starting at once agree on the first key written.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key
