"""Places, tickets and check-in in one process (embedded default), over HTTP:
what a member, a host at the door and an attacker each get, and what the log
keeps of every attempt. The clock is the container's, moved by the test."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi.testclient import TestClient

from adapters.face import FaceVerdict
from domain.attendance import CheckIn
from domain.scheduling import session_id
from api.bootstrap import build
from api.http import create_app
from api.settings import Settings
from tests.integration.test_communities import World, png

START = dt.datetime(2031, 3, 4, 18, 0, tzinfo=dt.timezone.utc)  # a Tuesday; sessions at 18:00 UTC


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def door(tmp_path: Path) -> Iterator[tuple[World, Clock]]:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None, rate_limits=False))
    clock = Clock(START - dt.timedelta(days=7))
    container.clock = clock
    with TestClient(create_app(container)) as client:
        yield World(client, container), clock
    container.close()


def series(w: World, host: str, capacity: int | None = None, count: int = 3) -> list[str]:
    """A weekly series of QR-only sessions; returns the session ids in order."""
    out = w.call(host, "POST", "/series", 201, json={
        "title": "Choir", "host_ids": [w.ids[host]], "start": START.replace(tzinfo=None).isoformat(),
        "time_zone": "UTC", "duration_minutes": 60, "rule": f"FREQ=WEEKLY;COUNT={count}", "capacity": capacity})
    series_id = uuid.UUID(out["series_id"])
    sessions = sorted(w.c.app.get_series(series_id).occurrences(), key=lambda o: o.start)
    ids = [str(session_id(series_id, o.original_start)) for o in sessions]
    for sid in ids:
        w.call(host, "PUT", f"/sessions/{sid}/checkin-policy", 204, json={"policy": "qr"})
    return ids


def ticket(w: World, who: str, sid: str) -> str:
    return w.call(who, "GET", f"/sessions/{sid}/ticket", 200)["token"]


def scan(w: World, host: str, token: str, **form: str) -> tuple[int, dict]:
    r = w.client.post("/checkin", headers=w.auth[host], data={"token": token, "device_id": "door-1", **form})
    return r.status_code, r.json()


def attempts(w: World) -> list[dict]:
    """Every check-in attempt in the log, with its verdict."""
    out: dict[str, dict] = {}
    for e in w.c.event_log.read(0, 100_000):
        if e.event_type == "CheckInAttempted":
            out[e.aggregate_id] = dict(e.data)
        elif e.event_type in ("CheckInSucceeded", "CheckInFailed"):
            out[e.aggregate_id]["verdict"] = e.event_type, e.data["reason"]
    return list(out.values())


def test_capacity_is_respected_and_the_waitlist_moves_up_in_order(door: tuple[World, Clock]) -> None:
    w, _ = door
    for name in ("host", "ann", "ben", "cy", "di"):
        w.person(name)
    first, second, third = series(w, "host", capacity=2)
    assert w.call("ann", "POST", f"/sessions/{first}/places", 200, json={"scope": "series"})["standings"] == {
        first: "confirmed", second: "confirmed", third: "confirmed"}
    assert w.call("ben", "POST", f"/sessions/{second}/places", 200, json={"scope": "following"})["standings"] == {
        second: "confirmed", third: "confirmed"}
    assert w.call("cy", "POST", f"/sessions/{third}/places", 200, json={})["standings"] == {third: "waitlisted"}
    assert w.call("di", "POST", f"/sessions/{third}/places", 200, json={})["standings"] == {third: "waitlisted"}
    assert w.call("cy", "POST", f"/sessions/{third}/places", 200, json={})["standings"] == {third: "waitlisted"}
    assert w.code("cy", "GET", f"/sessions/{third}/ticket") == (409, "NO_PLACE")
    assert w.call("ann", "DELETE", f"/sessions/{third}/places", 200) == {"promoted": [w.ids["cy"]]}
    assert w.call("cy", "GET", f"/sessions/{third}/ticket", 200)["token"]
    promoted = [e for e in w.c.event_log.read(0, 10_000) if e.event_type == "RosterPromoted"]
    assert [(e.data["session_id"], e.data["user_id"]) for e in promoted] == [(third, w.ids["cy"])]


def test_concurrent_requests_for_the_last_place_give_it_to_one(door: tuple[World, Clock]) -> None:
    w, _ = door
    w.person("host")
    people = [w.person(f"m{i}") for i in range(16)]
    sid = series(w, "host", capacity=3, count=1)[0]
    results: dict[str, str] = {}

    def take(i: int) -> None:
        results[people[i]] = w.call(f"m{i}", "POST", f"/sessions/{sid}/places", 200, json={})["standings"][sid]
    threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["confirmed"] * 3 + ["waitlisted"] * 13


def test_a_ticket_admits_once_in_its_window_and_every_attempt_is_recorded(door: tuple[World, Clock]) -> None:
    w, clock = door
    for name in ("host", "ann", "eve"):
        w.person(name)
    sid, nxt, _ = series(w, "host")
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={"scope": "series"})
    early = ticket(w, "ann", sid)
    status, body = scan(w, "host", early)
    assert (status, body["code"]) == (409, "NOT_YET_OPEN")
    clock.now = START - dt.timedelta(minutes=10)
    assert scan(w, "host", early, session_id=nxt)[1]["code"] == "TICKET_INVALID"  # the scanner is for another session
    assert scan(w, "eve", early)[1]["code"] == "FORBIDDEN"  # only the session's hosts run scanners
    status, body = scan(w, "host", early, gate="north")
    assert status == 200 and body["outcome"] == "succeeded" and body["user_id"] == w.ids["ann"]
    assert scan(w, "host", early)[1]["code"] == "TICKET_ALREADY_USED"
    fresh, newer = ticket(w, "ann", sid), ticket(w, "ann", sid)
    assert scan(w, "host", fresh)[1]["code"] == "TICKET_REPLACED"  # asking again voids the older ticket
    assert scan(w, "host", newer, direction="out")[1]["outcome"] == "succeeded"
    clock.now = START + dt.timedelta(hours=3)
    assert scan(w, "host", newer)[1]["code"] == "TICKET_EXPIRED"

    log = attempts(w)
    codes = [a["verdict"][1] for a in log]
    assert codes == ["NOT_YET_OPEN", "TICKET_INVALID", "OK",
                     "TICKET_ALREADY_USED", "TICKET_REPLACED", "OK", "TICKET_EXPIRED"]
    ok = log[2]
    assert ok["device_id"] == "door-1" and ok["gate"] == "north" and ok["offline"] is False
    assert ok["received_at"].startswith("2031-03-04T17:50")
    used = [e for e in w.c.event_log.read(0, 10_000) if e.event_type == "TicketNonceUsed"]
    assert len(used) == 2  # one per admitted scan, none for refusals


def test_forged_tampered_resigned_and_foreign_tickets_are_refused(door: tuple[World, Clock]) -> None:
    w, clock = door
    for name in ("host", "ann", "bob"):
        w.person(name)
    sid = series(w, "host", count=1)[0]
    for name in ("ann", "bob"):
        w.call(name, "POST", f"/sessions/{sid}/places", 200, json={})
    clock.now = START
    good = ticket(w, "ann", sid)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    jwks = w.client.get("/.well-known/jwks.json").json()["keys"]
    public_raw = base64.urlsafe_b64decode(jwks[0]["x"] + "==")
    bob = w.ids["bob"]
    forged = {
        "swapped member": f"{header}.{b64({**claims, 'sub': bob})}.{signature}",
        "other key": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                headers={"kid": jwks[0]["kid"]}),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS256 with the public key": jwt.encode(claims, public_raw, algorithm="HS256",
                                                headers={"kid": jwks[0]["kid"]}),
        "not a jwt": "hello",
    }
    for what, token in forged.items():
        assert scan(w, "host", token)[1]["code"] == "TICKET_INVALID", what
    # a scanner can check the real one offline with the published key
    key = Ed25519PublicKey.from_public_bytes(public_raw)
    offline = jwt.decode(good, key, algorithms=["EdDSA"], audience="attendwise-checkin",
                         options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    assert offline["sid"] == sid and offline["sub"] == w.ids["ann"] and offline["nonce"]
    assert scan(w, "host", good)[1]["outcome"] == "succeeded"


def test_qr_codes_are_real_images(door: tuple[World, Clock]) -> None:
    w, _ = door
    w.person("host"), w.person("ann")
    sid = series(w, "host", count=1)[0]
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={})
    as_png = w.client.get(f"/sessions/{sid}/ticket?format=png", headers=w.auth["ann"])
    assert as_png.headers["content-type"] == "image/png" and as_png.content.startswith(b"\x89PNG")
    as_svg = w.client.get(f"/sessions/{sid}/ticket?format=svg", headers=w.auth["ann"])
    assert as_svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in as_svg.content


def test_a_cancelled_session_refuses_tickets(door: tuple[World, Clock]) -> None:
    w, clock = door
    w.person("host"), w.person("ann")
    sid = series(w, "host", count=1)[0]
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={})
    token = ticket(w, "ann", sid)
    w.call("host", "POST", f"/sessions/{sid}/cancel", 204, json={"reason": "storm"})
    clock.now = START
    assert scan(w, "host", token)[1]["code"] == "SESSION_CANCELLED"


def test_hosts_override_and_annul_with_reasons_kept(door: tuple[World, Clock]) -> None:
    w, clock = door
    for name in ("host", "ann", "bob"):
        w.person(name)
    sid = series(w, "host", count=1)[0]
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={})
    clock.now = START
    admitted = scan(w, "host", ticket(w, "ann", sid))[1]
    assert w.code("bob", "POST", f"/checkins/{admitted['checkin_id']}/annul", json={"reason": "x"}) == (403, "FORBIDDEN")
    w.call("host", "POST", f"/checkins/{admitted['checkin_id']}/annul", 204, json={"reason": "scanned the wrong person"})
    w.call("host", "PUT", f"/sessions/{sid}/attendance/{w.ids['bob']}", 204,
           json={"present": True, "reason": "forgot phone"})
    events = [(e.event_type, e.actor, e.data.get("reason")) for e in w.c.event_log.read(0, 10_000)
              if e.event_type in ("CheckInAnnulled", "PresenceMarkedAbsent", "PresenceMarkedPresent")]
    host = f"user:{w.ids['host']}"
    assert events == [("CheckInAnnulled", host, "scanned the wrong person"),
                      ("PresenceMarkedAbsent", host, "check-in annulled: scanned the wrong person"),
                      ("PresenceMarkedPresent", host, "forgot phone")]


def test_offline_kiosks_keep_scan_times_and_turn_double_acceptance_into_a_conflict(door: tuple[World, Clock]) -> None:
    w, clock = door
    w.person("host"), w.person("ann")
    sid = series(w, "host", count=1)[0]
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={})
    token = ticket(w, "ann", sid)
    scanned = (START - dt.timedelta(minutes=5)).isoformat()
    clock.now = START + dt.timedelta(hours=5)  # uploaded long after the window: the scan time counts

    def upload(device: str) -> list[dict]:
        return w.call("host", "POST", "/checkin/offline", 200, json={
            "device_id": device, "scans": [{"token": token, "scanned_at": scanned}]})["results"]
    first = upload("kiosk-a")
    assert first[0]["outcome"] == "succeeded"
    assert upload("kiosk-a") == first  # the same upload again: the same answer, nothing new
    other = upload("kiosk-b")
    assert other[0] == {"outcome": "conflict", "reason": "DUPLICATE_OFFLINE_SCAN", "checkin_id": other[0]["checkin_id"]}
    w.call("host", "POST", f"/checkins/{other[0]['checkin_id']}/resolve", 204, json={"accept": False})
    log = attempts(w)
    assert [(a["device_id"], a["offline"], a["scanned_at"][:16], a.get("verdict", (None, None))[1]) for a in log] == [
        ("kiosk-a", True, scanned[:16], "OK"), ("kiosk-b", True, scanned[:16], "REJECTED_BY_HOST")]


class SlowVerifier:
    """A verifier that answers after `delay` seconds (a busy model server)."""

    def __init__(self, delay: float, match: bool) -> None:
        self.delay, self.match = delay, match

    def verify(self, template: bytes, image: bytes) -> FaceVerdict:
        time.sleep(self.delay)
        return FaceVerdict(self.match, "OK" if self.match else "FACE_MISMATCH", 0.3, 0.4, 0.9, "test-model", "1")


class Enrolled:
    def template(self, user_id: str) -> bytes:
        return b"template"


def test_face_check_in_without_enrolment_or_with_a_late_verifier(door: tuple[World, Clock]) -> None:
    w, clock = door
    w.person("host"), w.person("ann")
    sid = series(w, "host", count=1)[0]
    w.call("host", "PUT", f"/sessions/{sid}/checkin-policy", 204, json={"policy": "face"})
    w.call("ann", "POST", f"/sessions/{sid}/places", 200, json={})
    clock.now = START
    photo = {"image": ("me.png", png(), "image/png")}
    no_photo = scan(w, "host", ticket(w, "ann", sid))
    assert no_photo[1]["code"] == "INVALID_INPUT"
    r = w.client.post("/checkin", headers=w.auth["host"], files=photo,
                      data={"token": ticket(w, "ann", sid), "device_id": "door"})
    assert r.json()["code"] == "FACE_NOT_ENROLLED"  # nobody is enrolled without a face model

    w.c.app.faces, w.c.app.verifier, w.c.app.verify_timeout = Enrolled(), SlowVerifier(0.5, True), 0.05
    r = w.client.post("/checkin", headers=w.auth["host"], files=photo,
                      data={"token": ticket(w, "ann", sid), "device_id": "door"})
    assert r.status_code == 202 and r.json()["outcome"] == "pending"  # never silently accepted
    checkin = r.json()["checkin_id"]
    deadline = time.monotonic() + 5
    while w.c.app._find(uuid.UUID(checkin), CheckIn).outcome == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    verdicts = [e.data for e in w.c.event_log.read(0, 10_000) if e.event_type == "CheckInSucceeded"]
    assert {k: verdicts[-1][k] for k in ("reason", "distance", "threshold", "model", "model_version")} == {
        "reason": "OK", "distance": 0.3, "threshold": 0.4, "model": "test-model", "model_version": "1"}

    w.c.app.verifier = SlowVerifier(0.0, False)
    for _ in range(4):  # five failures in all lock the ticket
        r = w.client.post("/checkin", headers=w.auth["host"], files=photo,
                          data={"token": ticket(w, "ann", sid), "device_id": "door"})
        assert r.json()["outcome"] == "failed" and r.json()["reason"] == "FACE_MISMATCH"
    assert w.code("ann", "GET", f"/sessions/{sid}/ticket") == (429, "TOO_MANY_ATTEMPTS")


def test_a_scanner_hammering_the_door_is_slowed_down_before_the_rest_of_the_api(tmp_path: Path) -> None:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None, rate_limits=True))
    with TestClient(create_app(container)) as client:
        w = World(client, container)
        w.person("host")
        answers = [client.post("/checkin", headers=w.auth["host"], data={"token": "x", "device_id": "d"})
                   for _ in range(40)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited and limited[0].headers["retry-after"] and limited[0].json()["code"] == "RATE_LIMITED"
        assert len(limited) < 40 and client.get("/healthz").status_code == 200  # the rest of the API still answers
    container.close()
