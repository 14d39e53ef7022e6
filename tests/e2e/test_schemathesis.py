"""Schemathesis over every operation of /openapi.json (malformed bodies too),
signed in: zero server errors, and every response conforms to the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.processes import Proc, free_port, wait_http

PASSWORD = "correct horse battery"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    port = free_port()
    api = Proc(["serve", "--port", str(port)], {"ATTENDWISE_DATA_DIR": str(tmp_path / "data"),
                                               "ATTENDWISE_RATE_LIMITS": "false"}, tmp_path / "api.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc=api)
        httpx.post(base + "/users", json={"email": "fuzz@example.org", "display_name": "Fuzz", "password": PASSWORD})
        token = httpx.post(base + "/auth/token", data={"grant_type": "password", "username": "fuzz@example.org",
                                                       "password": PASSWORD}).json()["access_token"]
        st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
        run = subprocess.run(
            [st, "run", base + "/openapi.json", "-H", f"Authorization: Bearer {token}",
             "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "25",
             "--no-color", "--seed", "1"],
            capture_output=True, text=True, timeout=600)
        tail = run.stdout[-3000:]
        assert run.returncode == 0, tail
        assert " passed" in tail and "failed" not in tail.split("Test cases:")[-1], tail
    finally:
        api.stop()
    assert "Traceback" not in api.log, api.log[-3000:]
