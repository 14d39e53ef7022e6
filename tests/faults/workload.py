"""People using a running stack over HTTP, and a ledger of what they were told.

`World.seed` registers a host and members, founds a community and schedules
sessions (QR and face) with places for everyone. `Workload` then runs client
threads, each owning some members, doing a weighted mix of operations:
registrations, posts, scheduling, feed reads and check-ins (a fresh ticket,
then the host's kiosk scans it; face check-ins send a photo).

Every command carries an `Idempotency-Key` and is retried with the same key
after a 503 (waiting its Retry-After), a 409 IDEMPOTENCY_KEY_IN_USE or a lost
connection, for a bounded time. The `Ledger` keeps every HTTP answer
(operation, outcome, latency) and every command the stack accepted, with the
ids it answered, so the event log can be checked against it afterwards
(tests/faults/invariants.py).

Outcomes of one request:
- `ok`: 2xx;
- `refused CODE`: a 4xx problem+json with a stable code (an answer);
- `unavailable`: 503 problem+json with Retry-After (a clear error);
- `graphql CODE`: a GraphQL answer carrying errors with a code;
- `api down`: the connection was refused or cut while the API process was
  killed (only counted as clear inside a recorded API outage);
- failures: `5xx` (any other server error), `timeout` (the client gave up
  waiting: a hang), `unclear` (anything else).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from domain.scheduling import session_id

PASSWORD = "correct horse battery staple"
FACES = Path(__file__).resolve().parents[3] / "shared" / "faces"
CLEAR = ("ok", "refused", "unavailable", "graphql", "api down")
FEED = "query($first: Int!) { feed(first: $first) { edges { node { id text likeCount commentCount } } } }"
RETRY_FOR = 20.0  # seconds a client keeps retrying one command


# ---------------------------------------------------------------- the ledger
@dataclass(frozen=True)
class Answer:
    op: str
    outcome: str  # see the module docstring
    status: int | None
    seconds: float
    at: float  # time.time() when it was answered


@dataclass
class Fault:
    kind: str  # "kill -9 relay", "stop nats-server", ...
    at: float  # time.time()
    seconds: float = 0.0  # how long the thing was down
    detail: str = ""


@dataclass
class Ledger:
    """Thread-safe record of a run: answers, accepted commands, faults."""

    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unacknowledged: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # gave up retrying
    faults: list[Fault] = field(default_factory=list)
    api_down: list[tuple[float, float]] = field(default_factory=list)  # (from, to) while the API was killed
    examples: dict[str, str] = field(default_factory=dict)  # outcome -> the first answer's body, for the report
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, a: Answer, body: str = "") -> None:
        with self._lock:
            self.answers.append(a)
            if a.outcome != "ok":
                self.examples.setdefault(f"{a.op}: {a.outcome}", body[:300])

    def accept(self, kind: str, **record: Any) -> None:
        with self._lock:
            self.accepted.setdefault(kind, []).append(record)

    def give_up(self, kind: str, **record: Any) -> None:
        with self._lock:
            self.unacknowledged.setdefault(kind, []).append(record)

    def fault(self, kind: str, at: float, seconds: float = 0.0, detail: str = "") -> None:
        with self._lock:
            self.faults.append(Fault(kind, at, seconds, detail))

    def in_api_outage(self, at: float, grace: float = 1.0) -> bool:
        return any(start - grace <= at <= end + grace for start, end in self.api_down)

    def failures(self) -> list[Answer]:
        """Answers that were neither a success nor a clear error."""
        return [a for a in self.answers if not a.outcome.startswith(CLEAR)
                or (a.outcome == "api down" and not self.in_api_outage(a.at))]

    def by_operation(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for a in self.answers:
            out.setdefault(a.op, Counter())[a.outcome] += 1
        return out


def outcome(r: httpx.Response) -> str:
    if r.request.url.path == "/graphql" and r.status_code in (200, 400, 503):  # 400: errors and no data at all
        errors = r.json().get("errors") or []
        code = (errors[0].get("extensions") or {}).get("code") if errors else None
        if not errors:
            return "ok"
        if not code or (r.status_code == 503 and not r.headers.get("retry-after")):
            return f"unclear {r.status_code}"
        return f"graphql {code} ({r.status_code})"
    if r.status_code < 300:
        return "ok"
    problem = r.headers.get("content-type", "").startswith("application/problem+json")
    code = r.json().get("code") if problem else None
    if r.status_code == 503 and problem and r.headers.get("retry-after"):
        return "unavailable"
    if 400 <= r.status_code < 500 and code:
        return f"refused {code}"
    if r.status_code >= 500:
        return f"5xx {r.status_code} {code or ''}".strip()
    return f"unclear {r.status_code}"


# ---------------------------------------------------------------- the people
@dataclass
class Person:
    id: str
    email: str
    auth: dict[str, str]
    face: bool = False


@dataclass
class World:
    """What the workload acts on: filled by `seed`."""

    url: str
    host: Person
    community: str
    qr_sessions: list[str]
    face_session: str | None
    members: list[Person]
    photo: bytes = b""

    @staticmethod
    def seed(url: str, *, members: int = 12, qr_sessions: int = 4, face_members: int = 0,
             enrol: Any = None, ledger: Ledger | None = None) -> "World":
        """`enrol(user_ids)` enrols the face members (the caller can reach the
        event store and a face worker); without it there is no face session."""
        http = Client(url, ledger or Ledger(), "seed")
        host = http.register("host")
        community = http.command("POST", "/communities", host, json={"name": "Runners", "visibility": "public"})
        sessions = [http.schedule(host, f"Track night {i}", "qr") for i in range(qr_sessions)]
        face_session = http.schedule(host, "Lab", "face") if face_members and enrol else None
        people = []
        for i in range(members):
            m = http.register(f"member{i}")
            m.face = face_session is not None and i < face_members
            http.command("POST", f"/communities/{community['id']}/join", m)
            for s in sessions + ([face_session] if m.face else []):
                http.command("POST", f"/sessions/{s}/places", m, json={})
            people.append(m)
        world = World(url, host, community["id"], sessions, face_session, people)
        if face_session is not None:
            enrol([m.id for m in people if m.face])
            world.photo = (FACES / "img16.jpg").read_bytes()
        return world

    def new_face_session(self, ledger: Ledger) -> None:
        """A fresh face session with places for the face members: five failed
        verifications lock a member's ticket for a session (TOO_MANY_ATTEMPTS),
        and faults make verifications fail."""
        if self.face_session is None:
            return
        http = Client(self.url, ledger, "setup")
        try:
            self.face_session = http.schedule(self.host, "Lab", "face")
            for m in self.members:
                if m.face:
                    http.command("POST", f"/sessions/{self.face_session}/places", m, json={})
        finally:
            http.close()


class GaveUp(Exception):
    pass


class Client:
    """One client's HTTP connection, recording every answer in the ledger."""

    def __init__(self, url: str, ledger: Ledger, name: str, timeout: float = 30.0) -> None:
        self.url, self.ledger, self.name = url, ledger, name
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self.http.close()

    def request(self, op: str, method: str, path: str, who: Person | None = None, **kw: Any) -> httpx.Response | None:
        """One HTTP request; None when it got no answer (recorded as such)."""
        headers = {**kw.pop("headers", {}), **(who.auth if who else {})}
        started = time.monotonic()
        try:
            r = self.http.request(method, path, headers=headers, **kw)
            result: str = outcome(r)
        except httpx.TimeoutException:
            r, result = None, "timeout"
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            r, result = None, "api down"
        self.ledger.answer(Answer(op, result, r.status_code if r is not None else None,
                                  time.monotonic() - started, time.time()),
                           r.text if r is not None else result)
        return r

    def command(self, method: str, path: str, who: Person | None, op: str | None = None,
                retry_for: float = RETRY_FOR, **kw: Any) -> dict[str, Any]:
        """A command, retried with one Idempotency-Key until it is answered
        (2xx: its JSON body; a refusal: `{"refused": code, "status": s}`), or
        `GaveUp` after `retry_for` seconds of 503s and lost connections."""
        op = op or f"{method} {path.split('/')[1]}"
        key = uuid.uuid4().hex
        headers = {**kw.pop("headers", {}), "Idempotency-Key": key}
        if kw.get("files"):  # a retry must send the same bytes: one multipart boundary for every try
            headers["Content-Type"] = f"multipart/form-data; boundary={key}"
        deadline = time.monotonic() + retry_for
        while True:
            r = self.request(op, method, path, who, headers=headers, **kw)
            if r is not None and r.status_code < 300:
                return r.json() if r.content else {}
            if r is not None and r.status_code < 500 and r.status_code != 409:
                return {"refused": r.json().get("code"), "status": r.status_code}
            if r is not None and r.status_code == 409 and r.json().get("code") != "IDEMPOTENCY_KEY_IN_USE":
                return {"refused": r.json().get("code"), "status": r.status_code}
            if time.monotonic() > deadline:
                raise GaveUp(f"{op}: no answer after {retry_for:.0f}s ({r.status_code if r is not None else 'none'})")
            wait = float(r.headers.get("retry-after", 1)) if r is not None else 0.5
            time.sleep(min(wait, 2.0) * random.uniform(0.5, 1.0))

    # ------------------------------------------------------------ operations
    def register(self, name: str) -> Person:
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.org"
        body = self.command("POST", "/users", None, op="register", json={
            "email": email, "display_name": name, "password": PASSWORD})
        if "refused" in body:
            raise AssertionError(f"registration refused: {body}")
        self.ledger.accept("user", id=body["id"], command_id=body["command_id"], email=email)
        token = self.command("POST", "/auth/token", None, op="sign in", data={
            "grant_type": "password", "username": email, "password": PASSWORD})
        return Person(body["id"], email, {"Authorization": f"Bearer {token['access_token']}"})

    def schedule(self, host: Person, title: str, policy: str) -> str:
        start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).replace(second=0, microsecond=0,
                                                                                       tzinfo=None)
        body = self.command("POST", "/series", host, op="schedule", json={
            "title": title, "host_ids": [host.id], "start": start.isoformat(), "time_zone": "UTC",
            "duration_minutes": 120, "rule": "FREQ=DAILY;COUNT=1"})
        if "refused" in body:
            raise AssertionError(f"scheduling refused: {body}")
        self.ledger.accept("series", id=body["series_id"])
        sid = str(session_id(uuid.UUID(body["series_id"]), start))
        self.command("PUT", f"/sessions/{sid}/checkin-policy", host, op="policy", json={"policy": policy})
        return sid

    def post(self, who: Person, community: str) -> str | None:
        """The post's id, or None (refused, or given up)."""
        marker = f"post {uuid.uuid4().hex}"
        try:
            body = self.command("POST", f"/communities/{community}/posts", who, op="post", json={"text": marker})
        except GaveUp:
            self.ledger.give_up("post", marker=marker)
            return None
        if "refused" in body:
            return None
        self.ledger.accept("post", id=body["id"], marker=marker)
        return body["id"]

    def feed(self, who: Person) -> str:
        """The outcome (see the module docstring)."""
        r = self.request("feed", "POST", "/graphql", who, json={"query": FEED, "variables": {"first": 20}})
        return outcome(r) if r is not None else "no answer"

    def check_in(self, world: World, who: Person, session: str, direction: str, face: bool) -> dict[str, Any] | None:
        """A fresh ticket, then the host's kiosk scans it: the accepted
        check-in (id, outcome, ...), or None (refused, or no answer)."""
        r = self.request("ticket", "GET", f"/sessions/{session}/ticket", who)
        if r is None or r.status_code != 200:
            return None
        token = r.json()["token"]
        nonce = _claims(token)["nonce"]
        self.ledger.accept("ticket", session=session, user=who.id, nonce=nonce)
        form = {"token": token, "device_id": f"kiosk-{self.name}", "direction": direction, "session_id": session}
        files = {"image": ("photo.jpg", world.photo, "image/jpeg")} if face else None
        try:
            body = self.command("POST", "/checkin", world.host, op="face check-in" if face else "check-in",
                                data=form, files=files)
        except GaveUp:
            self.ledger.give_up("checkin", nonce=nonce, session=session, user=who.id)
            return None
        if "refused" in body:
            return None
        record = {"id": body["checkin_id"], "outcome": body["outcome"], "nonce": nonce, "session": session,
                  "user": who.id, "face": face, "direction": direction, "at": time.time()}
        self.ledger.accept("checkin", **record)
        return record


def _claims(token: str) -> dict[str, Any]:
    """A ticket's claims, read without checking the signature (the server does)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ---------------------------------------------------------------- the workload
MIX = {"feed": 45, "post": 15, "check-in": 25, "face check-in": 5, "register": 3, "schedule": 2}


class Workload:
    """`threads` clients, each owning a share of the members, doing `mix`
    (operation -> weight) until `stop()`."""

    def __init__(self, world: World, ledger: Ledger, threads: int = 4, mix: dict[str, int] | None = None,
                 think: float = 0.02, seed: int = 7) -> None:
        assert threads <= len(world.members), "each client owns members: no more clients than members"
        self.world, self.ledger, self.think = world, ledger, think
        self.mix = dict(mix or MIX)
        if world.face_session is None:
            self.mix.pop("face check-in", None)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i, threads, seed + i), name=f"client-{i}",
                                          daemon=True) for i in range(threads)]
        self.errors: list[BaseException] = []
        self.inside: dict[tuple[str, str], bool] = {}

    def start(self) -> "Workload":
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 120.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a client thread hangs"

    def _client(self, i: int, n: int, seed: int) -> None:
        rng = random.Random(seed)
        w = self.world
        mine = [m for k, m in enumerate(w.members) if k % n == i]  # tickets are per member: no two clients share one
        faces = [m for m in mine if m.face]
        ops, weights = list(self.mix), list(self.mix.values())
        client = Client(w.url, self.ledger, f"c{i}")
        try:
            while not self._stop.is_set():
                op = rng.choices(ops, weights)[0]
                if op == "feed":
                    client.feed(rng.choice(mine))
                elif op == "post":
                    client.post(rng.choice(mine), w.community)
                elif op == "check-in" or (op == "face check-in" and faces):
                    face = op == "face check-in"
                    who = rng.choice(faces if face else mine)
                    session = w.face_session if face else rng.choice(w.qr_sessions)
                    assert session is not None
                    inside = self.inside.get((who.id, session), False)
                    result = client.check_in(w, who, session, "out" if inside and not face else "in", face)
                    if result and result["outcome"] == "succeeded":
                        self.inside[(who.id, session)] = not inside and not face
                elif op == "register":
                    try:
                        client.register(f"walk-in{rng.randrange(10**6)}")
                    except GaveUp:
                        pass  # given up: the log is checked against accepted registrations only
                elif op == "schedule":
                    try:
                        client.schedule(w.host, "Pop-up", "qr")
                    except GaveUp:
                        pass
                self._stop.wait(self.think)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)
            raise
        finally:
            client.close()
