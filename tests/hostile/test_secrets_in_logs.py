"""No secret reaches a log. A full workload runs on the full stack as
separate processes (API, relay, projector, notifier, a face worker):
registration, logins, refresh (and a replayed refresh token), a wrong
password, email verification, a password reset, a password change, face
enrolment, a ticket, a face check-in and its notification. Then every
process's output is searched for each secret the workload handled:
passwords, access and refresh tokens, the ticket and its nonce, the
verification and reset tokens, a push token, the signing keys, the
per-person encryption keys, the database password, face embeddings."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Stack
from tests.ml.conftest import need_faces
from tests.ml.test_enrolment_and_checkin import frame_for
from tests.processes import Proc, eventually, free_port, wait_http

pytestmark = pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")
FLOATS = re.compile(r"(?:-?\d+\.\d+(?:e-?\d+)?[,\s]+){24,}")  # an embedding printed as numbers
BASE64 = re.compile(r"[A-Za-z0-9+/]{400,}={0,2}")  # ... or as bytes (2,048 bytes: 2,732 characters)


def _outbox(data_dir: Path, link: str, to: str) -> str:
    """The token of the newest mail to `to` holding a `link?token=` (the notifier writes the outbox)."""
    def find() -> str | None:
        for path in sorted((data_dir / "outbox").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
            message = json.loads(path.read_text())
            found = re.search(re.escape(link) + r"\?token=([A-Za-z0-9._~-]+)", message["text"] or "")
            if message["to"] == to and found:
                return found.group(1)
        return None

    return eventually(find, timeout=30)


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.parametrize("base_url", ["full"], indirect=True)
def test_no_secret_reaches_any_log(base_url: Stack, tmp_path: Path, model_home: Path) -> None:
    faces = need_faces()
    url, data = str(base_url), base_url.data_dir
    secrets: dict[str, str] = {}
    worker = Proc(["face-worker"], {**base_url.env, "ATTENDWISE_MODEL_DIR": str(model_home)},
                  tmp_path / "face-worker.log").start()
    try:
        eventually(lambda: "face_worker_ready" in worker.log or None, timeout=120)

        tokens: list[str] = []  # every access and refresh token issued

        def login(email: str, password: str) -> tuple[dict[str, str], str]:
            r = httpx.post(url + "/auth/token", data={"grant_type": "password", "username": email,
                                                      "password": password}, timeout=10)
            assert r.status_code == 200, r.text
            tokens.extend((r.json()["access_token"], r.json()["refresh_token"]))
            return {"Authorization": f"Bearer {r.json()['access_token']}"}, r.json()["refresh_token"]

        passwords = ["Ann's first passphrase 1", "Ann's reset passphrase 2", "Ann's third passphrase 3"]
        secrets |= {f"password {i}": p for i, p in enumerate(passwords)}
        secrets["wrong password"] = "not Ann's passphrase 0"
        host_password = secrets["host password"] = "the host's passphrase"
        for email, password in (("ann@example.org", passwords[0]), ("host@example.org", host_password)):
            r = httpx.post(url + "/users", json={"email": email, "display_name": email[:4], "password": password})
            assert r.status_code == 201, r.text
        ann, refresh = login("ann@example.org", passwords[0])
        host, _ = login("host@example.org", host_password)
        host_id = httpx.get(url + "/me", headers=host).json()["id"]
        again = httpx.post(url + "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert again.status_code == 200, again.text
        tokens.extend((again.json()["access_token"], again.json()["refresh_token"]))
        replayed = httpx.post(url + "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert replayed.status_code == 401  # a rotated token presented again revokes the family
        wrong = httpx.post(url + "/auth/token", data={"grant_type": "password", "username": "ann@example.org",
                                                      "password": secrets["wrong password"]})
        assert wrong.status_code == 401
        secrets["forged token"] = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.forged-signature-value"
        assert httpx.get(url + "/me", headers={"Authorization": "Bearer " + secrets["forged token"]}).status_code == 401

        secrets["verification token"] = _outbox(data, "/auth/verify-email", "ann@example.org")
        assert httpx.get(url + "/auth/verify-email", params={"token": secrets["verification token"]}).status_code == 204
        assert httpx.post(url + "/auth/password-reset", json={"email": "ann@example.org"}).status_code == 202
        secrets["reset token"] = _outbox(data, "/auth/reset-password", "ann@example.org")
        r = httpx.post(url + "/auth/reset-password", data={"token": secrets["reset token"],
                                                           "new_password": passwords[1]})
        assert r.status_code == 204, r.text
        ann, _ = login("ann@example.org", passwords[1])
        r = httpx.post(url + "/me/password", headers=ann, json={"current_password": passwords[1],
                                                                "new_password": passwords[2]})
        assert r.status_code in (200, 204), r.text
        ann, _ = login("ann@example.org", passwords[2])
        secrets["push token"] = "fcm-device-token-" + "Zk9" * 30
        r = httpx.put(url + "/me/notification-preferences", headers=ann, json={"push_token": secrets["push token"]})
        assert r.status_code == 200, r.text

        start = httpx.get(url + "/users/enroll-challenge", headers=ann).json()
        secrets["liveness nonce"] = start["nonce"]
        for challenge in start["challenges"]:
            r = httpx.post(url + "/users/me/enroll-face", headers=ann, timeout=120,
                           data={"session_id": start["session_id"], "nonce": start["nonce"]},
                           files={"image": ("f.jpg", frame_for(faces, challenge), "image/jpeg")})
            assert r.status_code == 200 and r.json()["status"] != "CHALLENGE_FAILED_RETRY", r.text
        assert r.json()["status"] == "ENROLLED"

        begins = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(second=0, microsecond=0)
        series = httpx.post(url + "/series", headers=host, json={
            "title": "Lab", "host_ids": [host_id], "start": begins.replace(tzinfo=None).isoformat(),
            "time_zone": "UTC", "duration_minutes": 60}).json()["series_id"]
        query = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"
        session = eventually(lambda: (httpx.post(url + "/graphql", json={"query": query, "variables": {"id": series}})
                                      .json()["data"]["series"] or {}).get("sessions"))["edges"][0]["node"]["id"]
        assert httpx.post(f"{url}/sessions/{session}/places", headers=ann, json={}).status_code == 200
        ticket = httpx.get(f"{url}/sessions/{session}/ticket", headers=ann).json()["token"]
        secrets["ticket"], secrets["ticket nonce"] = ticket, _claims(ticket)["nonce"]
        r = httpx.post(url + "/checkin", headers=host, timeout=60, data={"token": ticket, "device_id": "door"},
                       files={"image": ("p.jpg", (faces / "img16.jpg").read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text
        eventually(lambda: any("check" in (json.loads(p.read_text())["subject"] or "").lower()
                               for p in (data / "outbox").glob("*.json")), timeout=30)
        time.sleep(1)  # let every process log what it does after the last step
    finally:
        worker.stop()

    secrets |= {f"token {i}": token for i, token in enumerate(tokens)}
    # what else is secret: signing keys, each person's data key, the database password
    for pem in (data / "keys").glob("*.pem"):
        body = [line for line in pem.read_text().splitlines() if line and not line.startswith("-----")]
        secrets |= {f"{pem.name} line {i}": line for i, line in enumerate(body)}
    with psycopg.connect(base_url.env["ATTENDWISE_DATABASE_URL"]) as db:
        keys = [bytes(r[0]) for r in db.execute("SELECT key FROM user_keys")]
    assert len(keys) == 2
    for i, key in enumerate(keys):
        secrets[f"data key {i} (base64)"] = base64.b64encode(key).decode()
        secrets[f"data key {i} (hex)"] = key.hex()
    secrets["database password"] = urlparse(base_url.env["ATTENDWISE_DATABASE_URL"]).password or "unset"
    secrets["S3 secret key"] = base_url.env["ATTENDWISE_S3_SECRET_KEY"]

    logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    assert {"api.log", "relay.log", "project.log", "notify.log", "face-worker.log"} <= set(logs)
    assert all(logs[name] for name in ("api.log", "notify.log", "face-worker.log"))  # the projector may say nothing
    leaks = [(name, log) for name, value in secrets.items() for log, text in logs.items() if value in text]
    assert not leaks, leaks
    for log, text in logs.items():
        assert not FLOATS.search(text) and not BASE64.search(text), (log, (FLOATS.search(text) or
                                                                         BASE64.search(text)).group()[:200])
        assert "PRIVATE KEY" not in text, log


def test_passwords_in_service_urls_reach_neither_logs_nor_readyz(pg_url: str, tmp_path: Path) -> None:
    """A service URL's password (NATS, Redis, PostgreSQL) is masked wherever
    the URL is named: the relay's retries, /readyz, a failed start."""
    nats = f"nats://alice:n4ts-s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    env = {"ATTENDWISE_DATA_DIR": str(tmp_path / "data"), "ATTENDWISE_DATABASE_URL": pg_url,
           "ATTENDWISE_NATS_URL": nats, "ATTENDWISE_RATE_LIMITS": "false"}
    port = free_port()
    relay = Proc(["relay"], env, tmp_path / "relay.log").start()
    api = Proc(["serve", "--port", str(port)], env, tmp_path / "api.log").start()
    redis = Proc(["relay"], {**env, "ATTENDWISE_RATE_LIMITS": "true",
                             "ATTENDWISE_REDIS_URL": f"redis://:r3dis-s3cret@127.0.0.1:{free_port()}/0"},
                 tmp_path / "redis.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=api)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503 and "nats://alice:***@127.0.0.1" in ready.json()["checks"]["nats"]
        eventually(lambda: "relay_waiting" in relay.log and "nats://alice:***@" in relay.log, timeout=20)
        assert redis.p is not None and redis.p.wait(30) == 2
        assert "redis://:***@127.0.0.1" in redis.log
    finally:
        for p in (relay, api, redis):
            p.stop()
    password = urlparse(pg_url).password
    assert password, "the test database's URL has a password"
    for text in (ready.text, relay.log, api.log, redis.log):
        assert "n4ts-s3cret" not in text and "r3dis-s3cret" not in text and password not in text, text[-2000:]
