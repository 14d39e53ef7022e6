"""Schemathesis over every operation of /openapi.json (malformed bodies too),
signed in, on the embedded default and on the full stack: zero server
errors, every response conforms to the schema, and no projection stumbles
on what the fuzzer stored.

Random ids only ever reach "not found", so the test first makes one of
everything (a community the fuzzing user runs, a post, a comment, a series
and its session, another member and their check-in, an upload) and hands
their ids to Schemathesis as the path parameters: each operation's handler
then runs on fuzzed bodies and query strings."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Stack, gql
from tests.processes import eventually

PASSWORD = "correct horse battery"


def sign_up(base: str, email: str) -> tuple[str, dict[str, str]]:
    uid = httpx.post(base + "/users", json={"email": email, "display_name": email.split("@")[0], "password": PASSWORD},
                     timeout=10).json()["id"]
    token = httpx.post(base + "/auth/token", data={"grant_type": "password", "username": email,
                                                   "password": PASSWORD}, timeout=10).json()["access_token"]
    return uid, {"Authorization": f"Bearer {token}"}


def seed(base: str) -> tuple[str, dict[str, str]]:
    """The fuzzing user's access token, and an existing id for each path parameter."""
    me, auth = sign_up(base, "fuzz@example.org")
    other, other_auth = sign_up(base, "other@example.org")

    def call(method: str, path: str, headers: dict[str, str], **kw: object) -> dict:
        r = httpx.request(method, base + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]
        assert r.status_code < 300, f"{method} {path}: {r.text}"
        return r.json() if r.content else {}

    community = call("POST", "/communities", auth, json={"name": "Fuzzers"})["id"]
    post = call("POST", f"/communities/{community}/posts", auth, json={"text": "a post"})["id"]
    comment = call("POST", f"/posts/{post}/comments", auth, json={"text": "a comment"})["id"]
    begins = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(tzinfo=None, second=0,
                                                                                 microsecond=0)
    series = call("POST", "/series", auth, json={"title": "Fuzz", "host_ids": [me], "start": begins.isoformat(),
                                                 "time_zone": "UTC", "duration_minutes": 60,
                                                 "rule": "FREQ=DAILY;COUNT=3"})["series_id"]
    query = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"
    session = eventually(lambda: (gql(base, query, id=series)["data"]["series"] or {}).get("sessions"))
    session = session["edges"][0]["node"]["id"]
    call("PUT", f"/sessions/{session}/checkin-policy", auth, json={"policy": "qr"})
    call("POST", f"/sessions/{session}/places", other_auth, json={})
    ticket = call("GET", f"/sessions/{session}/ticket", other_auth)["token"]
    checkin = call("POST", "/checkin", auth, data={"token": ticket, "device_id": "door"})["checkin_id"]
    upload = call("POST", "/media/uploads", auth, json={"purpose": "avatar", "content_type": "image/png",
                                                        "size": 100})["upload_id"]
    return auth["Authorization"], {"user_id": other, "community_id": community, "post_id": post,
                                   "comment_id": comment, "series_id": series, "session_id": session,
                                   "checkin_id": checkin, "upload_id": upload}


def projection_errors(stack: Stack) -> list[tuple[str, str]]:
    if stack.mode == "full":
        import psycopg

        with psycopg.connect(stack.env["ATTENDWISE_DATABASE_URL"]) as db:
            return db.execute("SELECT name, error FROM projection_errors").fetchall()
    with sqlite3.connect(stack.data_dir / "readmodels.sqlite3") as db:
        return db.execute("SELECT name, error FROM projection_errors").fetchall()


@pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")
def test_schemathesis_finds_no_server_error_and_no_schema_violation(base_url: Stack, tmp_path: Path) -> None:
    authorization, ids = seed(base_url)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"path.{k}" = {json.dumps(v)}\n' for k, v in ids.items()))
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    run = subprocess.run(
        [st, "--config-file", str(config), "run", base_url + "/openapi.json", "-H", f"Authorization: {authorization}",
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "25",
         "--no-color", "--seed", "1"],
        capture_output=True, text=True, timeout=600)
    (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)  # the whole report, to read on failure
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail.split("Test cases:")[-1], tail
    summary = run.stdout.split("SUMMARY")[-1]
    assert "Tested: " in summary and summary.split("Selected: ")[1].split("/")[0] == \
        summary.split("Tested: ")[1].split()[0], summary  # every operation of the schema was tested
    eventually(lambda: httpx.get(base_url + "/healthz").status_code == 200)
    assert projection_errors(base_url) == []
