"""Kill notifiers at random moments: no message is lost, none is sent as two.

The full stack (PostgreSQL, JetStream, relay, projector, API) with two
`attendwise notify` processes sharing JetStream's durable consumer, sending
to a real SMTP server on loopback. While people register (verification
mails, from events) and take places in a session starting within the hour
(reminders, from the sessions read model), the test SIGKILLs a notifier again
and again and starts it anew.

What may repeat: a message a killed worker handed to the SMTP server just
before dying, before it could record `Sent`. It is resent with the same
Message-ID (at least once towards the provider; the receiver can tell).
No person ever gets two different messages for one event or one reminder.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from domain.scheduling import session_id
from infra.smtp_sink import SmtpSink, free_port
from tests.e2e.conftest import Stack
from tests.processes import Proc

SINK_PORT = free_port()
PASSWORD = "correct horse battery staple"
PEOPLE = 12


@pytest.fixture
def sink() -> SmtpSink:
    with SmtpSink(port=SINK_PORT) as s:
        yield s


def person(base: str, name: str) -> tuple[str, dict[str, str]]:
    r = httpx.post(base + "/users", json={"email": f"{name}@example.org", "display_name": name,
                                           "password": PASSWORD}, timeout=10)
    assert r.status_code == 201, r.text
    token = httpx.post(base + "/auth/token", data={"grant_type": "password", "username": f"{name}@example.org",
                                                    "password": PASSWORD}, timeout=10).json()["access_token"]
    return r.json()["id"], {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
@pytest.mark.own_notifiers
@pytest.mark.stack_env(ATTENDWISE_SMTP_URL=f"smtp://127.0.0.1:{SINK_PORT}", ATTENDWISE_NOTIFY_LEASE="2",
                       ATTENDWISE_NOTIFY_ACK_WAIT="2", ATTENDWISE_NOTIFY_SWEEP_EVERY="0.3",
                       ATTENDWISE_NOTIFY_REMINDERS_EVERY="0.3", ATTENDWISE_RATE_LIMITS="false")
@pytest.mark.parametrize("base_url", ["full"], indirect=True)
def test_killed_notifiers_lose_nothing_and_never_send_two_messages_for_one(sink: SmtpSink, base_url: Stack,
                                                                           tmp_path: Path) -> None:
    rng = random.Random(7)
    notifiers = [Proc(["notify"], base_url.env, tmp_path / f"notify-{i}.log").start() for i in range(2)]
    kills = 0
    last_kill = time.monotonic()

    def chaos() -> None:
        nonlocal kills, last_kill
        if time.monotonic() - last_kill > rng.uniform(0.3, 0.9):
            victim = rng.choice(notifiers)
            victim.kill9()
            kills += 1
            victim.start()
            last_kill = time.monotonic()

    try:
        host, host_auth = person(base_url, "host")
        start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=50)).replace(second=0, microsecond=0)
        r = httpx.post(base_url + "/series", headers=host_auth, timeout=10, json={
            "title": "Sunrise yoga", "host_ids": [host], "start": start.replace(tzinfo=None).isoformat(),
            "time_zone": "UTC", "duration_minutes": 60, "rule": "FREQ=DAILY;COUNT=1"})
        assert r.status_code == 201, r.text
        sid = str(session_id(uuid.UUID(r.json()["series_id"]), start.replace(tzinfo=None)))  # its original local start
        for i in range(PEOPLE):
            chaos()
            _, auth = person(base_url, f"member{i}")
            assert httpx.post(base_url + f"/sessions/{sid}/places", headers=auth, json={},
                              timeout=10).status_code == 200
        expected = {(f"member{i}@example.org", kind) for i in range(PEOPLE) for kind in ("confirm", "reminder")}
        expected.add(("host@example.org", "confirm"))

        def delivered() -> set[tuple[str, str]]:
            return {(m["To"], "confirm" if "confirm" in m["Subject"].lower() else "reminder")
                    for m in sink.messages()}

        deadline = time.monotonic() + 90
        while (delivered() != expected or kills < 6) and time.monotonic() < deadline:
            chaos()
            time.sleep(0.05)
        time.sleep(3)  # lapsed leases and redeliveries (2 s) would show now
    finally:
        for n in notifiers:
            n.stop()
    assert kills >= 6
    assert delivered() == expected, f"missing: {expected - delivered()}"
    ids_per_message: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in sink.messages():
        ids_per_message[(m["To"], m["Subject"])].add(m["Message-ID"])
    assert all(len(ids) == 1 for ids in ids_per_message.values()), "one cause sent as two different messages"
    repeats = sum(c - 1 for c in Counter(m["Message-ID"] for m in sink.messages()).values())
    assert repeats <= kills, f"{repeats} resends for {kills} kills"  # only a message in flight at a kill
    print(f"{kills} kills, {len(sink.messages())} messages received, {repeats} resent with the same Message-ID")
