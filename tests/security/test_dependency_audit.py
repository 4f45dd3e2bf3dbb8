"""The dependency audit of `make test` (scripts/audit_deps.py): fails on a known
vulnerability, warns loudly (and passes) only when the vulnerability service cannot be
reached, and never reports an audit that did not happen as a pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "scripts" / "audit_deps.py")
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)


def _dep(name: str, vulns=(), skip: str | None = None) -> dict:
    d = {"name": name, "version": "1.0"}
    if skip:
        d["skip_reason"] = skip
    else:
        d["vulns"] = list(vulns)
    return d


def test_a_known_vulnerability_fails_the_build():
    report = {
        "dependencies": [
            _dep("django", [{"id": "PYSEC-2026-1", "fix_versions": ["5.2.20"]}]),
            _dep("celery"),
        ]
    }
    status, message = audit.classify(1, "", report)
    assert status == 1
    assert "django==1.0: PYSEC-2026-1 (fixed in: 5.2.20)" in message


def test_a_vulnerability_fails_even_when_other_lookups_were_skipped():
    report = {
        "dependencies": [
            _dep("django", [{"id": "GHSA-x", "fix_versions": []}]),
            _dep("torch", skip="Dependency not found on PyPI"),
        ]
    }
    assert audit.classify(1, "", report)[0] == 1


def test_a_clean_audit_passes():
    status, message = audit.classify(0, "", {"dependencies": [_dep("django"), _dep("celery")]})
    assert status == 0 and "2 packages, no known vulnerabilities" in message


def test_an_unreachable_service_warns_that_the_audit_did_not_run():
    output = "requests.exceptions.ConnectionError: Max retries exceeded ... NameResolutionError"
    status, message = audit.classify(1, output, None)
    assert status == 0 and "WARNING: dependency audit did NOT run" in message


def test_a_service_that_knows_no_package_is_not_a_pass():
    report = {"dependencies": [_dep(n, skip="Dependency not found on PyPI") for n in "abc"]}
    status, message = audit.classify(0, "", report)
    assert status == 0 and "did NOT run" in message and "no known vulnerabilities" not in message


def test_any_other_failure_fails_the_build():
    status, message = audit.classify(2, "error: invalid requirement: 'torch=='", None)
    assert status == 2 and "pip-audit failed" in message
