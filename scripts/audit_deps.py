"""Dependency audit of requirements.lock with pip-audit, for `make test` (CI).

pip-audit looks every pinned package up in a vulnerability service (PyPI's JSON API by
default). Outcomes:

- a known vulnerability: exit 1, listing it: the build fails;
- every package looked up, none vulnerable: exit 0;
- the service could not be reached (DNS, connection refused, timeout), or answered for none
  of the packages (a mirror or proxy that serves the package index but not PyPI's JSON API
  says "not found" for everything): exit 0 with a loud WARNING saying the audit did NOT run.
  A network failure must not fail every offline build, and must not look like a pass.

Anything else pip-audit reports (a bad lock file, an internal error) fails the build.
See docs/security.md, "Dependency audit".
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Connection refused",
    "timed out",
    "ReadTimeout",
    "ConnectTimeout",
    "ProxyError",
    "SSLError",
)


def warning(message: str) -> str:
    bar = "!" * 78
    return f"{bar}\nWARNING: dependency audit did NOT run: {message}\n{bar}"


def classify(returncode: int, output: str, report: dict | None) -> tuple[int, str]:
    """(exit status, what to print) from pip-audit's exit status, output and JSON report."""
    if report is not None:
        deps = report.get("dependencies", [])
        vulnerable = [d for d in deps if d.get("vulns")]
        if vulnerable:
            lines = [
                f"{d['name']}=={d['version']}: {v['id']} "
                f"(fixed in: {', '.join(v.get('fix_versions') or []) or 'none yet'})"
                for d in vulnerable
                for v in d["vulns"]
            ]
            lines.append(f"dependency audit: {len(vulnerable)} vulnerable package(s)")
            return 1, "\n".join(lines)
        skipped = [d for d in deps if d.get("skip_reason")]
        audited = len(deps) - len(skipped)
        if deps and audited == 0:
            return 0, warning(
                f"the vulnerability service answered for none of the {len(deps)} packages "
                f"(first reason: {skipped[0]['skip_reason']})"
            )
        if returncode == 0:
            note = f"; {len(skipped)} not found: {[d['name'] for d in skipped]}" if skipped else ""
            return 0, f"dependency audit: {audited} packages, no known vulnerabilities{note}"
    if any(marker in output for marker in NETWORK_ERRORS):
        last = [line for line in output.splitlines() if line.strip()][-1:]
        return 0, warning(f"the vulnerability service is unreachable ({' '.join(last)[:200]})")
    return returncode or 1, f"{output}\ndependency audit: pip-audit failed (exit {returncode})"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.json"
        cmd = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(ROOT / "requirements.lock"),
            "--no-deps",  # the lock file is the whole resolved set
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--timeout",
            "15",
            "--format",
            "json",
            "--output",
            str(path),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # noqa: S603 (fixed argv)
        report = json.loads(path.read_text()) if path.exists() and path.stat().st_size else None
    status, message = classify(result.returncode, result.stdout + result.stderr, report)
    print(message, file=sys.stderr if status or "WARNING" in message else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
