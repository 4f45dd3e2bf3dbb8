"""The web process imports no torch: every URL's view is imported in a process where
``import torch`` (and the other ML libraries) fails.

import-linter checks the same rule statically (the ``web-no-torch`` contract in
pyproject.toml); this test checks what Django really loads: the apps, their admin modules,
the URL configuration (its ``include()`` strings included) and every view module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "transformers", "peft", "accelerate", "safetensors")

SCRIPT = r"""
import importlib, json, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(json.loads(sys.argv[1]))


class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the web process must not import it")
        return None


sys.meta_path.insert(0, Block())

import django

django.setup()
from django.urls import URLPattern, URLResolver, get_resolver


def walk(patterns):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns)
        elif isinstance(p, URLPattern):
            yield p


modules = set()
for pattern in walk(get_resolver().url_patterns):
    callback = pattern.callback
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None) or callback
    module = getattr(view, "__module__", None) or callback.__module__
    importlib.import_module(module)
    modules.add(module)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"modules": sorted(modules), "loaded": loaded}))
"""


def test_every_view_imports_without_torch():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BLOCKED)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    # The walk reached the views of every part of the site.
    modules = set(result["modules"])
    for expected in (
        "annotator_ui.views",
        "rlhf_platform.api.rounds",
        "rlhf_platform.api.campaigns",
        "rlhf_platform.insights.views",
        "django.contrib.admin.sites",
    ):
        assert expected in modules, sorted(modules)


def test_the_blocker_does_block(tmp_path):
    # The same harness refuses a module that imports torch: the test above can fail.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings"}
    probe = SCRIPT.replace("django.setup()", "django.setup()\nimport ml_worker.core.enn")
    proc = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(BLOCKED)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "torch is blocked" in proc.stderr


def test_the_static_contract_covers_every_app_the_web_process_loads():
    # A new app joins the web-no-torch contract's sources (pyproject.toml) when it is
    # installed; the round engine (the rounds app) is the worker's, and only its torch-free
    # parts (its models, rounds.state, rounds.dispatch) are imported by the web process.
    import tomllib

    from django.conf import settings

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "web-no-torch")
    sources = set(contract["source_modules"])
    apps = {a for a in settings.INSTALLED_APPS if a.startswith(("rlhf_platform.", "annotator_ui"))}
    engine = "rlhf_platform.rounds"
    assert {
        f"{engine}.models",
        f"{engine}.admin",
        f"{engine}.state",
        f"{engine}.dispatch",
    } <= sources
    assert apps - {engine} <= sources
