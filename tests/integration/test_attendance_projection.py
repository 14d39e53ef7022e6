"""The attendance projection against the aggregates that cause its events.

Random scripts drive real `Roster`, `CheckIn` and `Presence` aggregates. Their
events, applied live in random batches (and then all delivered again), give
the same rows as a rebuild from the log; every counter equals counting the
rows (and what the aggregates themselves say); each session's change feed
ends with its stats. One long script also goes through the embedded event
store, so the real encoding (ids, datetimes) is what the projection reads.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.readmodels import ReadModelStore, SQLiteReadModelStore
from api.bootstrap import build
from api.settings import Settings
from commands.messages import CommandContext
from domain.attendance import CheckIn, Presence, Roster, ticket_id
from domain.base import event_name
from domain.envelope import EventEnvelope
from projections.attendance import (OUTCOME_COUNTERS, RATE_WINDOW, AttendanceProjection, dashboard_stats,
                                    new_stats)
from projections.projector import Projector
from projections.rebuild import rebuild
from tests.unit.test_projection_replay import ListLog

SESSIONS = [str(uuid.UUID(int=i + 1)) for i in range(2)]
USERS = [str(uuid.UUID(int=100 + i)) for i in range(3)]
GATES = ["north", "south"]
T0 = dt.datetime(2026, 3, 1, 18, 0, tzinfo=dt.timezone.utc)
FACE = SimpleNamespace(confidence=0.93, distance=0.31, threshold=0.45, model="arcface", model_version="r100-1")

Op = tuple[Any, ...]
session, user, gate = st.sampled_from(SESSIONS), st.sampled_from(USERS), st.sampled_from(GATES)
capacity, index = st.sampled_from([1, 2, None]), st.integers(0, 30)
OPS = {
    "reserve": st.tuples(st.just("reserve"), session, user, capacity),
    "give_up": st.tuples(st.just("give_up"), session, user, capacity),
    "attempt": st.tuples(st.just("attempt"), session, user, gate, st.sampled_from(["in", "in", "out"]), st.booleans()),
    "unreadable": st.tuples(st.just("unreadable"), gate),
    "resolve": st.tuples(st.just("resolve"), index, st.booleans()),
    "decide": st.tuples(st.just("decide"), index, st.sampled_from([True, True, False])),
    "conflict": st.tuples(st.just("conflict"), index, index),
    "annul": st.tuples(st.just("annul"), index),
    "mark": st.tuples(st.just("mark"), session, user, st.booleans()),
    "scan": st.tuples(st.just("scan"), session, user, gate, st.sampled_from(["in", "out"])),
}
# attempts and their verdicts are what a door sees most
ops = st.sampled_from([*OPS, "attempt", "attempt", "decide", "decide"]).flatmap(OPS.__getitem__)


class Script:
    """Real aggregates driven by ops; `step` returns the aggregates one command saves."""

    def __init__(self) -> None:
        self.rosters: dict[str, Roster] = {}
        self.presences: dict[tuple[str, str], Presence] = {}
        self.checkins: list[CheckIn] = []

    def roster(self, s: str) -> Roster:
        return self.rosters.setdefault(s, Roster(s))

    def presence(self, s: str, u: str) -> Presence:
        return self.presences.setdefault((s, u), Presence(s, u))

    def step(self, op: Op, now: dt.datetime) -> list[Any]:
        kind = op[0]
        if kind == "reserve":
            self.roster(op[1]).reserve(op[2], op[3])
            return [self.roster(op[1])]
        if kind == "give_up":
            self.roster(op[1]).give_up(op[2], op[3])
            return [self.roster(op[1])]
        if kind == "attempt":
            _, s, u, gate, direction, offline = op
            self.checkins.append(CheckIn(s, u, str(ticket_id(s, u)), f"kiosk-{gate}", gate, direction, "qr",
                                         now - dt.timedelta(seconds=2), now, offline))
            return [self.checkins[-1]]
        if kind == "unreadable":  # refused before anything is known, as the handler records it
            c = CheckIn("", "", "", f"kiosk-{op[1]}", op[1], "in", "", now, now, False)
            c.decide(False, "TICKET_INVALID")
            self.checkins.append(c)
            return [c]
        known = [c for c in self.checkins if c.session_id]  # an unreadable attempt stays as it was
        if kind in ("decide", "resolve"):  # as the handlers do: a success moves the member in (or out)
            candidates = [c for c in known if c.outcome == ("pending" if kind == "decide" else "conflict")]
            if not candidates:
                return []
            c = candidates[op[1] % len(candidates)]
            if kind == "decide":
                c.decide(op[2], "OK" if op[2] else "FACE_MISMATCH", FACE)
            else:
                c.resolve(op[2])
            if not op[2]:
                return [c]
            p = self.presence(c.session_id, c.user_id)
            p.scan(c.id, c.direction, c.gate)
            return [c, p]
        if kind in ("conflict", "annul"):
            if not known:
                return []
            c = known[op[1] % len(known)]
            if kind == "conflict":
                c.conflict(known[op[2] % len(known)].id)
            else:
                c.annul("host:1", "wrong person")
            return [c]
        if kind == "mark":
            p = self.presence(op[1], op[2])
            p.mark(op[3], "host:1", "seen at the door")
            return [p]
        p = self.presence(op[1], op[2])
        p.scan(uuid.uuid4(), op[4], op[3])
        return [p]


def _plain(v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).isoformat()
    return v


def envelopes(batches: list[list[Any]], seconds: list[int]) -> list[EventEnvelope]:
    """The aggregates' events as the log would carry them, at controlled times."""
    out: list[EventEnvelope] = []
    at = T0
    for aggregates, gap in zip(batches, seconds):
        at += dt.timedelta(seconds=gap)
        for agg in aggregates:
            for ev in agg.collect_events():
                data = {k: _plain(v) for k, v in vars(ev).items()
                        if k not in ("originator_id", "originator_version", "timestamp", "originator_topic")}
                out.append(EventEnvelope(len(out) + 1, str(uuid.uuid4()), event_name(type(ev)), agg.CONTEXT,
                                         str(ev.originator_id), ev.originator_version, at.isoformat(), 1, "test",
                                         "c", data))
    return out


def check_counts(store: ReadModelStore, script: Script) -> None:
    """Every counter equals counting rows, and rows equal the aggregates."""
    for session, roster in script.rosters.items():
        places = store.rows("places", where={"session_id": session})
        assert sorted(p["user_id"] for p in places if p["status"] == "confirmed") == sorted(roster.confirmed)
        assert sorted(p["user_id"] for p in places if p["status"] == "waitlisted") == sorted(roster.waiting)
    for (session, user), p in script.presences.items():
        row = store.get("presence", f"{session}:{user}")
        assert row is not None and (row["attended"], row["inside"]) == (p.attended, p.inside_at is not None)
    for c in script.checkins:
        assert store.get("checkins", str(c.id))["outcome"] == c.outcome  # type: ignore[index]
    for stats in store.rows("session_stats"):
        sid = stats["id"]
        places = store.rows("places", where={"session_id": sid})
        presence = store.rows("presence", where={"session_id": sid})
        checkins = store.rows("checkins", where={"session_id": sid})
        assert stats["expected"] == sum(p["status"] == "confirmed" for p in places)
        assert stats["checked_in"] == sum(p["attended"] for p in presence)
        inside = Counter(p["gate"] for p in presence if p["inside"])
        assert (stats["inside"], stats["inside_by_gate"]) == (sum(inside.values()), dict(inside))
        outcomes = Counter(c["outcome"] for c in checkins)
        assert {col: stats[col] for col in OUTCOME_COUNTERS.values()} == {
            col: outcomes[o] for o, col in OUTCOME_COUNTERS.items()}
        changes = store.rows("session_changes", where={"session_id": sid}, order_by="seq")
        if not changes:  # a roster opened, nothing else yet
            assert stats == new_stats(sid)
            continue
        last = changes[-1]
        assert stats["last_seq"] == last["seq"] == max(c["seq"] for c in changes)
        assert last["change"]["stats"] == dashboard_stats(stats, dt.datetime.fromisoformat(last["change"]["at"]))
        newest = max(map(int, stats["recent"]), default=0)
        assert all(int(second) > newest - RATE_WINDOW for second in stats["recent"])  # a minute, no more


def check_rates(store: ReadModelStore, events: list[EventEnvelope]) -> None:
    """Each change carries the arrivals of the minute before it, counted from the log."""
    attempts = {e.aggregate_id: e.data for e in events if e.event_type == "CheckInAttempted"}
    arrivals = [(e.position, attempts[e.aggregate_id]["session_id"], second(e.timestamp))
                for e in events if e.event_type == "CheckInSucceeded" and attempts[e.aggregate_id]["direction"] == "in"]
    for row in store.rows("session_changes"):
        at = second(row["change"]["at"])
        assert row["change"]["stats"]["rate_per_minute"] == sum(
            1 for pos, sid, t in arrivals
            if pos <= row["seq"] and sid == row["session_id"] and at - RATE_WINDOW < t <= at)


def second(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp())


def tables(store: ReadModelStore) -> dict[str, list[dict[str, Any]]]:
    return {t.name: store.rows(t.name, order_by="id") for t in AttendanceProjection.tables}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ops, st.sampled_from([0, 1, 20, 61])), min_size=20, max_size=80),  # (op, seconds later)
       st.randoms(use_true_random=False))
def test_live_in_random_batches_equals_rebuild_and_counts_equal_rows(steps: list[tuple[Op, int]],
                                                                      rnd: random.Random) -> None:
    script = Script()
    events = envelopes([script.step(op, T0) for op, _ in steps], [gap for _, gap in steps])
    with tempfile.TemporaryDirectory() as d:
        live = SQLiteReadModelStore(Path(d) / "live.sqlite3")
        projector = Projector(AttendanceProjection(), live)
        at = 0
        while at < len(events):
            size = rnd.randint(1, 6)
            projector.handle(events[at:at + size])
            at += size
        projector.handle(events)  # a redelivery changes nothing

        clean = SQLiteReadModelStore(Path(d) / "clean.sqlite3")
        rebuild(AttendanceProjection(), clean, ListLog(events))

        assert tables(live) == tables(clean)
        assert live.position("attendance") == clean.position("attendance") == len(events)
        check_counts(clean, script)
        check_rates(clean, events)
        live.close()
        clean.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(ops, min_size=60, max_size=120))
def test_through_the_embedded_event_store(steps: list[Op]) -> None:
    """The same through the real log: what the store encodes is what the projection reads."""
    with tempfile.TemporaryDirectory() as d:
        c = build(Settings(data_dir=Path(d), database_url=None, nats_url=None, redis_url=None, neo4j_uri=None,
                           s3_endpoint=None, rate_limits=False))
        script = Script()
        for op in steps:
            aggregates = script.step(op, dt.datetime.now(dt.timezone.utc))
            if aggregates:
                c.app.save_stamped(CommandContext.system("test"), *aggregates)
        c.projectors["attendance"].catch_up(c.event_log, batch=7)
        clean = SQLiteReadModelStore(Path(d) / "clean.sqlite3")
        rebuild(AttendanceProjection(), clean, c.event_log)
        assert tables(c.readmodels) == tables(clean)
        check_counts(c.readmodels, script)
        check_rates(c.readmodels, c.event_log.read(0, 100_000))
        attempt = next((e for e in c.event_log.read(0, 10_000) if e.event_type == "CheckInAttempted"), None)
        if attempt is not None:
            assert dt.datetime.fromisoformat(attempt.data["received_at"]).tzinfo is not None
        clean.close()
        c.close()
