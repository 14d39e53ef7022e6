"""The live host dashboard against the running stack (embedded, and full:
PostgreSQL, JetStream, relay and projector as processes), with a real
WebSocket client. A host gets a snapshot, then each check-in's changes in
`seq` order; disconnected mid-stream and reconnected with the last `seq`, they
get exactly what they missed; strangers are refused. The same feed over the
GraphQL subscription, and the attendance queries with their rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import Stack, gql
from tests.e2e.test_scheduling_api import sign_up
from tests.processes import eventually

MEMBERS = 12
QUIET = 1.0  # seconds without a message: nothing more is coming
LIVE = ("subscription($s: ID!, $a: Int) { sessionLive(sessionId: $s, after: $a) { type seq kind userId checkInId "
        "stats { expected checkedIn inside insideByGate { gate inside } ratePerMinute } } }")


def first_session(base: str, series_id: str) -> str | None:
    found = gql(base, "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }", id=series_id)
    series = found["data"]["series"]
    return series["sessions"]["edges"][0]["node"]["id"] if series else None


class Door:
    """A session with members holding tickets, and its host's scanner."""

    def __init__(self, base: Stack) -> None:
        self.base = base
        self.host, self.host_auth = sign_up(base, "host@example.org")
        self.host_token = self.host_auth["Authorization"][7:]
        start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).replace(second=0, microsecond=0,
                                                                                       tzinfo=None)
        series = httpx.post(base + "/series", headers=self.host_auth, timeout=30, json={
            "title": "Gala", "host_ids": [self.host], "start": start.isoformat(), "time_zone": "UTC",
            "duration_minutes": 120}).json()
        self.session: str = eventually(lambda: first_session(base, series["series_id"]))
        assert httpx.put(f"{base}/sessions/{self.session}/checkin-policy", headers=self.host_auth,
                         json={"policy": "qr"}).status_code == 204
        self.members: list[tuple[str, dict[str, str], str]] = []
        for i in range(MEMBERS):
            uid, auth = sign_up(base, f"m{i}@example.org")
            assert httpx.post(f"{base}/sessions/{self.session}/places", headers=auth, json={}).status_code == 200
            token = httpx.get(f"{base}/sessions/{self.session}/ticket", headers=auth).json()["token"]
            self.members.append((uid, auth, token))
        self.live = base.replace("http", "ws", 1) + f"/sessions/{self.session}/live"

    async def check_in(self, http: httpx.AsyncClient, i: int) -> tuple[str, float]:
        """Member i through gate north or south; (check-in id, when its commit was answered)."""
        r = await http.post(self.base + "/checkin", headers=self.host_auth, data={
            "token": self.members[i][2], "device_id": f"kiosk-{i % 2}", "gate": ("north", "south")[i % 2],
            "direction": "in", "session_id": self.session})
        assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text
        return r.json()["checkin_id"], time.monotonic()


async def receive(ws: Any, until: Any = None, quiet: float = QUIET) -> list[dict]:
    """Messages until `until(messages)` holds, then until none comes for `quiet` seconds."""
    got: list[dict] = []
    while True:
        try:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), quiet if until is None or until(got) else 20)))
        except asyncio.TimeoutError:
            if until is None or until(got):
                return got
            raise AssertionError(f"stopped after {len(got)} messages: {got[-3:]}") from None


def entered(n: int) -> Any:
    return lambda got: sum(m.get("kind") == "entered" for m in got) >= n


def increasing(changes: list[dict]) -> None:
    seqs = [m["seq"] for m in changes]
    assert all(m["type"] == "change" for m in changes) and seqs == sorted(set(seqs))


async def refused(url: str, **kw: Any) -> tuple[dict, int | None]:
    async with websockets.connect(url, **kw) as ws:
        message = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return message, ws.close_code


@pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")
def test_a_host_watches_the_door_live_and_resumes_without_gap_or_duplicate(base_url: Stack) -> None:
    door = Door(base_url)
    _, stranger = sign_up(base_url, "eve@example.org")
    member_token = door.members[0][1]["Authorization"][7:]

    async def scenario() -> tuple[dict, list[dict], list[dict], list[dict], list[float]]:
        async with httpx.AsyncClient(timeout=30) as http:
            async with websockets.connect(door.live + f"?access_token={door.host_token}") as ws:
                snapshot = json.loads(await ws.recv())
                delays, first = [], []
                for i in range(4):  # one by one: how long from the commit to the dashboard
                    checkin, committed = await door.check_in(http, i)
                    got = await receive(ws, lambda g: any(m.get("kind") == "entered" for m in g), quiet=0)
                    delays.append(time.monotonic() - committed)
                    assert checkin in {m["checkin_id"] for m in got}
                    first += got
                burst = [asyncio.create_task(door.check_in(http, i)) for i in range(4, MEMBERS)]
                first.append(json.loads(await ws.recv()))  # mid-stream: one message of the burst, then gone
            await asyncio.gather(*burst)
            assert httpx.put(f"{base_url}/sessions/{door.session}/attendance/{door.members[0][0]}",
                             headers=door.host_auth, json={"present": False, "reason": "left early"}).status_code == 204
            header = {"Authorization": f"Bearer {door.host_token}"}
            async with websockets.connect(door.live + f"?after={first[-1]['seq']}", additional_headers=header) as ws:
                resumed = await receive(ws, lambda g: any(m.get("kind") == "marked_absent" for m in g))
            async with websockets.connect(door.live + f"?after={snapshot['seq']}&access_token={door.host_token}") as ws:
                everything = await receive(ws, lambda g: any(m.get("kind") == "marked_absent" for m in g))
        return snapshot, first, resumed, everything, delays

    snapshot, first, resumed, everything, delays = asyncio.run(scenario())
    assert snapshot["type"] == "snapshot" and snapshot["stats"] == {
        "expected": MEMBERS, "checked_in": 0, "failed": 0, "pending": 0, "conflicts": 0, "inside": 0,
        "inside_by_gate": {}, "rate_per_minute": 0}
    for part in (first, resumed, everything):
        increasing(part)
    assert first + resumed == everything  # no gap, no duplicate
    assert resumed and resumed[0]["seq"] > first[-1]["seq"]
    kinds = [m["kind"] for m in everything]
    assert kinds.count("checkin.pending") == kinds.count("checkin.succeeded") == kinds.count("entered") == MEMBERS
    assert kinds[-1] == "marked_absent" and len(kinds) == 3 * MEMBERS + 1
    assert everything[-1]["stats"] == {
        "expected": MEMBERS, "checked_in": MEMBERS - 1, "failed": 0, "pending": 0, "conflicts": 0,
        "inside": MEMBERS - 1, "inside_by_gate": {"north": MEMBERS // 2 - 1, "south": MEMBERS // 2},
        "rate_per_minute": MEMBERS}
    print(f"\n{base_url.mode}: commit -> dashboard {[round(d * 1000) for d in delays]} ms, "
          f"median {statistics.median(delays) * 1000:.0f} ms")
    assert max(delays) < 0.25

    async def strangers() -> list[tuple[dict, int | None]]:
        return [await refused(door.live + f"?access_token={member_token}"),
                await refused(door.live, additional_headers=stranger),
                await refused(door.live),
                await refused(door.live + "?access_token=not-a-token"),
                await refused(door.live + f"?access_token={door.host_token}&after=-1")]
    answers = asyncio.run(strangers())
    assert [(m["type"], m["code"], code) for m, code in answers] == [
        ("error", "FORBIDDEN", 4403), ("error", "FORBIDDEN", 4403), ("error", "TOKEN_INVALID", 4401),
        ("error", "TOKEN_INVALID", 4401), ("error", "INVALID_INPUT", 4422)]

    # the same feed as a GraphQL subscription (graphql-transport-ws), and the queries
    async def subscription(token: str, after: int | None) -> list[dict]:
        url = base_url.replace("http", "ws", 1) + f"/graphql?access_token={token}"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {
                "query": LIVE, "variables": {"s": door.session, "a": after}}}))
            return await receive(ws, lambda g: any(m["type"] == "error" for m in g) or len(g) >= (
                1 if after is None else len(everything)))

    snap = asyncio.run(subscription(door.host_token, None))
    assert [m["payload"]["data"]["sessionLive"]["type"] for m in snap] == ["snapshot"]
    assert snap[0]["payload"]["data"]["sessionLive"]["seq"] == everything[-1]["seq"]
    changes = [m["payload"]["data"]["sessionLive"] for m in asyncio.run(subscription(door.host_token, snapshot["seq"]))]
    assert [(c["seq"], c["kind"], c["checkInId"]) for c in changes] == [
        (m["seq"], m["kind"], m["checkin_id"]) for m in everything]
    assert changes[-1]["stats"]["insideByGate"] == [{"gate": "north", "inside": MEMBERS // 2 - 1},
                                                    {"gate": "south", "inside": MEMBERS // 2}]
    denied = asyncio.run(subscription(member_token, None))
    assert denied[0]["type"] == "error" and [e["extensions"]["code"] for e in denied[0]["payload"]] == ["FORBIDDEN"]

    def query(auth: dict[str, str], q: str) -> dict:
        return httpx.post(base_url + "/graphql", headers=auth, timeout=10,
                          json={"query": q, "variables": {"s": door.session}}).json()
    stats = query(door.host_auth, "query($s: ID!) { sessionStats(sessionId: $s) { seq expected checkedIn succeeded "
                                  "inside ratePerMinute } }")["data"]["sessionStats"]
    assert stats == {"seq": everything[-1]["seq"], "expected": MEMBERS, "checkedIn": MEMBERS - 1,
                     "succeeded": MEMBERS, "inside": MEMBERS - 1, "ratePerMinute": MEMBERS}
    people = query(door.host_auth, "query($s: ID!) { sessionAttendance(sessionId: $s, first: 100) { edges { node { "
                                   "userId status attended inside gate markedBy user { displayName } } } } }")
    nodes = [e["node"] for e in people["data"]["sessionAttendance"]["edges"]]
    assert [n["userId"] for n in nodes] == [m[0] for m in door.members]  # in the order places were taken
    assert nodes[0]["attended"] is False and nodes[0]["markedBy"] == f"user:{door.host}"
    assert all(n["attended"] and n["inside"] and n["status"] == "confirmed" for n in nodes[1:])
    assert nodes[1]["user"] == {"displayName": "m1"} and nodes[1]["gate"] == "south"
    attempts = query(door.host_auth, "query($s: ID!) { checkIns(sessionId: $s, first: 100, outcome: SUCCEEDED) { "
                                     "edges { node { userId deviceId reason offline scannedAt receivedAt } } } }")
    edges = attempts["data"]["checkIns"]["edges"]
    assert len(edges) == MEMBERS and {e["node"]["reason"] for e in edges} == {"OK"}
    assert edges[0]["node"]["receivedAt"] >= edges[-1]["node"]["receivedAt"]  # newest first
    mine = query(door.members[3][1], "{ myCheckIns { edges { node { userId sessionId outcome } } } }")
    assert [e["node"] for e in mine["data"]["myCheckIns"]["edges"]] == [
        {"userId": door.members[3][0], "sessionId": door.session, "outcome": "SUCCEEDED"}]
    for q in ("query($s: ID!) { sessionStats(sessionId: $s) { expected } }",
              "query($s: ID!) { checkIns(sessionId: $s) { edges { node { id } } } }",
              "query($s: ID!) { sessionAttendance(sessionId: $s) { edges { node { userId } } } }"):
        assert [e["extensions"]["code"] for e in query(door.members[3][1], q)["errors"]] == ["FORBIDDEN"]
        assert [e["extensions"]["code"] for e in query({}, q)["errors"]] == ["TOKEN_INVALID"]
