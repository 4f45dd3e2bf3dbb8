#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (tests/annotator_ui/test_browser.py).
# The tests drive it with Playwright for Python; `playwright install` is never used.
# Needs root (or sudo) the first time; does nothing when chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: chromium is missing and neither root nor sudo is available; install the 'chromium' package"; exit 1; }
  SUDO="sudo"
fi
echo "== Installing Debian's chromium for the browser tests"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
command -v chromium >/dev/null 2>&1 || { echo "error: chromium still not on PATH after apt-get install"; exit 1; }
