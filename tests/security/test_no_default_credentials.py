"""No default credentials and no secrets in the repository.

The demo generates its users' passwords (``seed_demo``: tests/rlhf_platform/test_seed_demo.py)
and the secret key (``VAR_DIR/secret_key``: tests/security/test_deploy_settings.py); API
keys come from the environment. This scans every tracked file for what would break that: a
committed key or secret file, and documentation or scripts that hand out a fixed password.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SECRET_FILES = re.compile(r"(^|/)(\.env(\..+)?|secret_key|.+\.pem|.+\.key|id_(rsa|ed25519|ecdsa))$")
SECRETS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "OpenAI key": re.compile(r"\bsk-(proj-)?[A-Za-z0-9_-]{32,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Django secret key": re.compile(r"""SECRET_KEY\s*=\s*["'][^"']{20,}["']"""),
}
# A fixed password handed out by a doc, a script or a seed: `password admin`,
# `"password": "changeme"`, `admin/admin`, `createsuperuser ... --password ...`.
WEAK = r"(admin|password|passw0rd|changeme|secret|demo|test|letmein|123456|qwerty)"
DEFAULT_CREDENTIALS = re.compile(
    rf"""password["']?\s*[:=]\s*["']{WEAK}["']"""  # "password": "admin"
    rf"""|password\s*[:=]\s*{WEAK}\s*$"""  # password: admin (YAML, .env)
    rf"""|\b{WEAK}\s*/\s*{WEAK}\b(?!/)"""  # admin/admin
    r"""|--password[= ]\S""",  # a password on a command line
    re.IGNORECASE | re.MULTILINE,
)


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / p for p in out.split("\0") if p]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096] or len(data) > 5_000_000:
        return None
    return data.decode("utf-8", errors="replace")


def test_no_secret_files_are_tracked():
    found = [str(p.relative_to(ROOT)) for p in _tracked() if SECRET_FILES.search(str(p))]
    assert not found, f"secret-looking files in git: {found}"


def test_no_secrets_in_tracked_files():
    found = []
    for path in _tracked():
        text = _text(path)
        if text is None:
            continue
        for what, pattern in SECRETS.items():
            for m in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}: {what}: {m.group(0)[:24]}...")
    assert not found, "\n".join(found)


def test_no_default_credentials_in_docs_scripts_or_seeds():
    found = []
    for path in _tracked():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tests":  # tests create throwaway users on a throwaway database
            continue
        text = _text(path)
        if text is None:
            continue
        for m in DEFAULT_CREDENTIALS.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{rel}:{line}: {m.group(0)!r}")
    assert not found, "fixed credentials:\n" + "\n".join(found)


def test_the_scanner_catches_what_it_is_for():
    assert DEFAULT_CREDENTIALS.search('{"username": "admin", "password": "admin"}')
    assert DEFAULT_CREDENTIALS.search("log in with admin/admin")
    assert DEFAULT_CREDENTIALS.search("manage.py createsuperuser --password hunter2")
    assert DEFAULT_CREDENTIALS.search("ADMIN_PASSWORD=changeme\n")
    assert not DEFAULT_CREDENTIALS.search('"password": "<printed password>"')
    assert not DEFAULT_CREDENTIALS.search("create_user(username, password=password)")
    assert SECRETS["OpenAI key"].search("OPENAI_API_KEY=sk-" + "a" * 40)
