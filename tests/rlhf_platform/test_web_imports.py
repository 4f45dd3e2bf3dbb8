"""The web process never imports torch (DESIGN.md section 8; issue 21).

torch costs about 2 s and a few hundred MB per gunicorn worker and nothing a request does
needs it: round work goes to Celery by task name. Checked in a fresh interpreter that loads
the WSGI application and every view of the URL configuration, as a gunicorn worker does
once it has served each endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
from django.urls import get_resolver

def walk(patterns):
    for p in patterns:
        if hasattr(p, "url_patterns"):
            walk(p.url_patterns)
        else:
            p.callback  # imports the view's module

walk(get_resolver().url_patterns)
heavy = ("torch", "numpy", "transformers", "peft", "ml_worker.tasks", "rlhf_platform.rounds.services")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_wsgi_application_and_every_view_load_without_torch():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
