"""A replayed QR ticket: 100 concurrent submissions of one ticket against the
running stack (embedded, and full: PostgreSQL with group commit, separate
relay and projector). Exactly one is admitted, 99 are told the ticket was
used, and the log holds exactly one use of the nonce."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from api.bootstrap import build
from api.settings import Settings
from domain.scheduling import session_id as sid_of
from tests.e2e.conftest import Stack
from tests.e2e.test_scheduling_api import sign_up


async def verdicts_on_jetstream(url: str, namespace: str, expected: int) -> dict[str, int]:
    """Counts check-in verdicts on the stream (subjects
    `<ns>.attendwise.checkin.CheckInSucceeded` / `...CheckInFailed`)."""
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    counts = {"CheckInSucceeded": 0, "CheckInFailed": 0}
    try:
        sub = await nc.jetstream().subscribe(f"{namespace}.attendwise.checkin.*", ordered_consumer=True,
                                             config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        while sum(counts.values()) < expected:
            msg = await sub.next_msg(timeout=20)
            kind = msg.subject.rsplit(".", 1)[1]
            if kind in counts:
                counts[kind] += 1
    finally:
        await nc.close()
    return counts


@pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")  # the door is hammered on purpose
def test_one_ticket_scanned_a_hundred_times_at_once_admits_once(base_url: Stack) -> None:
    host, host_auth = sign_up(base_url, "host@example.org")
    _, ann_auth = sign_up(base_url, "ann@example.org")
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).replace(second=0, microsecond=0, tzinfo=None)
    series = httpx.post(base_url + "/series", headers=host_auth, timeout=30, json={
        "title": "Gala", "host_ids": [host], "start": start.isoformat(), "time_zone": "UTC",
        "duration_minutes": 120}).json()
    settings = Settings(data_dir=base_url.data_dir, database_url=base_url.env.get("ATTENDWISE_DATABASE_URL"),
                        nats_url=None, neo4j_uri=None, s3_endpoint=None, redis_url=None)
    container = build(settings)
    try:
        series_id = uuid.UUID(series["series_id"])
        session_id = str(sid_of(series_id, container.app.get_series(series_id).occurrences()[0].original_start))
        assert httpx.put(f"{base_url}/sessions/{session_id}/checkin-policy", headers=host_auth,
                         json={"policy": "qr"}).status_code == 204
        assert httpx.post(f"{base_url}/sessions/{session_id}/places", headers=ann_auth, json={}).status_code == 200
        token = httpx.get(f"{base_url}/sessions/{session_id}/ticket", headers=ann_auth).json()["token"]

        def submit(i: int) -> tuple[int, dict]:
            r = httpx.post(base_url + "/checkin", headers=host_auth, timeout=60,
                           data={"token": token, "device_id": f"attacker-{i}"})
            return r.status_code, r.json()
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(submit, range(100)))

        admitted = [b for s, b in answers if s == 200 and b.get("outcome") == "succeeded"]
        refused = [b for s, b in answers if b.get("code") == "TICKET_ALREADY_USED"]
        assert len(admitted) == 1 and len(refused) == 99, sorted({str(a) for a in answers})[:5]
        used = [e for e in container.event_log.read(0, 100_000) if e.event_type == "TicketNonceUsed"]
        assert len(used) == 1 and used[0].data["checkin_id"] == admitted[0]["checkin_id"]
        failed = [e for e in container.event_log.read(0, 100_000)
                  if e.event_type == "CheckInFailed" and e.data["reason"] == "TICKET_ALREADY_USED"]
        assert len(failed) == 99  # every refused attempt is on the record too
        if base_url.mode == "full":  # and the verdicts reach JetStream for other services
            ns = base_url.env["ATTENDWISE_NATS_NAMESPACE"]
            assert asyncio.run(verdicts_on_jetstream(base_url.env["ATTENDWISE_NATS_URL"], ns, 100)) == {
                "CheckInSucceeded": 1, "CheckInFailed": 99}
    finally:
        container.close()
