"""Settings come from the environment and fail loudly: each case starts a fresh process."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Variables a case may set; removed from the inherited environment so each run starts clean.
SETTINGS_VARS = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "HTTPS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "BEHIND_PROXY",
    "LEASE_SECONDS",
    "LEASE_SWEEP_SECONDS",
    "CELERY_TASK_TIME_LIMIT",
    "CELERY_TASK_SOFT_TIME_LIMIT",
    "LOG_LEVEL",
    "ARTIFACT_ROOT",
)


def run_python(args: list[str], var_dir: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    env.update(DJANGO_SETTINGS_MODULE="rlhf_platform.settings", VAR_DIR=str(var_dir))
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def django_setup(var_dir: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    return run_python(["-c", "import django; django.setup()"], var_dir, **env_vars)


def test_defaults_start(tmp_path):
    result = django_setup(tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("HTTPS", "perhaps"),
        ("BEHIND_PROXY", "2"),
        ("LEASE_SECONDS", "abc"),
        ("LEASE_SECONDS", "5"),
        ("LEASE_SWEEP_SECONDS", "0"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("CELERY_TASK_TIME_LIMIT", "1h"),
        ("CELERY_TASK_SOFT_TIME_LIMIT", "99999"),
        ("DATABASE_URL", "mysql://user@db.example.org/rlhf"),
        ("DATABASE_URL", "not a url"),
        ("CELERY_BROKER_URL", "ftp://x"),
        ("SECRET_KEY", "short"),
        ("LOG_LEVEL", "LOUD"),
        ("CACHE_URL", "memcached://x"),
        ("ROUND_CLAIM_STALE_SECONDS", "0"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(tmp_path, name, value):
    result = django_setup(tmp_path, **{name: value})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert name in last_line, result.stderr


def test_secret_key_is_generated_once_into_var_dir(tmp_path):
    show = ["-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = run_python(show, tmp_path)
    second = run_python(show, tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "secret_key"
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert first.stdout.strip() == second.stdout.strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_from_the_environment_wins_and_writes_no_file(tmp_path):
    key = secrets.token_urlsafe(50)
    show = ["-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    result = run_python(show, tmp_path, SECRET_KEY=key)
    assert result.stdout.strip() == key
    assert not (tmp_path / "secret_key").exists()


def test_no_secret_key_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert tracked, "not a git checkout"
    assert not [path for path in tracked if "secret_key" in Path(path).name]
    assert not [path for path in tracked if path.startswith("var/")]
    ignored = subprocess.run(["git", "check-ignore", "-q", "var/secret_key"], cwd=ROOT)
    assert ignored.returncode == 0, "var/ must be ignored by git"


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run_python(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="rlhf.example.org",
        HTTPS="1",
        SECURE_HSTS_SECONDS="31536000",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_with_the_embedded_defaults(tmp_path):
    """The guard is real: without HTTPS settings the same check fails."""
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # no HSTS
    assert "security.W012" in result.stderr  # session cookie not secure
