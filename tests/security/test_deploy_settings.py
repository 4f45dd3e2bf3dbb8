"""Production settings: secure cookies, HSTS, HTTPS redirect, and ``check --deploy`` clean.

Each case starts a fresh process with a production-like environment (DEBUG off, HTTPS on,
a SECRET_KEY from the environment), the way a web server starts.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "HTTPS": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "ALLOWED_HOSTS": "rlhf.example.org",
    "DATABASE_URL": "postgres://rlhf@db.internal:5432/rlhf",
    "CELERY_BROKER_URL": "redis://broker.internal:6379/0",
    "CACHE_URL": "redis://cache.internal:6379/1",
}
SHOWN = (
    "DEBUG",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SAMESITE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "X_FRAME_OPTIONS",
    "REST_FRAMEWORK",
)


def _run(args: list[str], tmp_path: Path, env_vars: dict[str, str]):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION and k not in ("SECRET_KEY", "SECURE_SSL_REDIRECT", "BEHIND_PROXY")
    }
    env.update(DJANGO_SETTINGS_MODULE="rlhf_platform.settings", VAR_DIR=str(tmp_path))
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_secure_the_cookies_and_the_transport(tmp_path):
    show = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {SHOWN!r}}}, default=str))"
    )
    result = _run(
        ["-c", "import django; django.setup(); " + show],
        tmp_path,
        {**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)},
    )
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout.strip().splitlines()[-1])
    assert s["DEBUG"] is False
    assert s["SESSION_COOKIE_SECURE"] and s["SESSION_COOKIE_HTTPONLY"]
    assert s["CSRF_COOKIE_SECURE"] and s["CSRF_COOKIE_HTTPONLY"]
    assert s["SESSION_COOKIE_SAMESITE"] == s["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert s["SECURE_SSL_REDIRECT"] is True
    assert s["SECURE_HSTS_SECONDS"] == 31536000 and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert s["SECURE_CONTENT_TYPE_NOSNIFF"] and s["X_FRAME_OPTIONS"] == "DENY"
    # No browsable API (and its forms) in production.
    assert "BrowsableAPIRenderer" not in s["REST_FRAMEWORK"]


def test_check_deploy_is_clean_in_production_settings(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        {**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_a_secret_key_in_the_environment_one_is_generated_outside_git(tmp_path):
    """No key is ever built in: a missing SECRET_KEY makes a random one in VAR_DIR."""
    show = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = _run(["-c", show], tmp_path, PRODUCTION)
    other = _run(["-c", show], tmp_path / "elsewhere", PRODUCTION)
    assert first.returncode == 0 and other.returncode == 0, first.stderr + other.stderr
    assert first.stdout.strip() != other.stdout.strip()
    assert (tmp_path / "secret_key").read_text().strip() == first.stdout.strip()
