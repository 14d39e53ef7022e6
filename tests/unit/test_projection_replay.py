"""Property: whatever the event sequence and wherever the projector crashes,
the live-maintained projection equals a clean rebuild from the log."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.readmodels import ReadModelTx, SQLiteReadModelStore, Table
from domain.envelope import EventEnvelope
from projections.projector import Projector
from projections.rebuild import plan_processes, rebuild


class ListLog:
    """An `EventLog` over a list (positions with gaps, as a real store has)."""

    def __init__(self, events: list[EventEnvelope]) -> None:
        self.events = events

    def read(self, after: int, limit: int) -> list[EventEnvelope]:
        return [e for e in self.events if e.position > after][:limit]

    def scan(self, after: int, upto: int, types: Collection[str]) -> list[EventEnvelope]:
        return [e for e in self.events if after < e.position <= upto and e.event_type in types]

    def head(self) -> int:
        return self.events[-1].position if self.events else 0

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.event_type for e in self.events))


@st.composite
def histories(draw: st.DrawFn) -> list[EventEnvelope]:
    n_users = draw(st.integers(1, 6))
    users = [str(uuid.UUID(int=draw(st.integers(1, 2**64)))) for _ in range(n_users)]
    versions = dict.fromkeys(users, 0)
    events, position = [], 0
    for _ in range(draw(st.integers(1, 40))):
        uid = draw(st.sampled_from(users))
        position += draw(st.integers(1, 3))  # gaps, as rolled-back inserts leave
        versions[uid] += 1
        if versions[uid] == 1:
            etype, data = "UserRegistered", {"email": f"{uid[:8]}@x.org", "display_name": "n0", "time_zone": "UTC"}
        else:
            etype, data = "UserDisplayNameChanged", {"display_name": draw(st.text(min_size=1, max_size=8))}
        events.append(EventEnvelope(position, str(uuid.uuid4()), etype, "identity", uid, versions[uid],
                                    f"2026-01-01T00:00:{position % 60:02d}+00:00", 2, "anonymous", "c", data))
        if draw(st.booleans()):  # an event this projection ignores still moves its position
            position += 1
            events.append(EventEnvelope(position, str(uuid.uuid4()), "EmailAddressClaimed", "identity",
                                        str(uuid.uuid4()), 1, "2026-01-01T00:00:00+00:00", 1, "anonymous", "c", {}))
    return events


COUNTS = Table("event_counts", columns=(("id", "text"), ("events", "int"), ("last_version", "int")))


class CountingProjection:
    """Counts events per user: not idempotent, so an event applied twice (or
    lost) shows. The users projection alone would hide double application."""

    name = "event_counts"
    tables = (COUNTS,)
    event_types = frozenset({"UserRegistered", "UserDisplayNameChanged"})

    def apply(self, event: EventEnvelope, tx: ReadModelTx) -> None:
        row = tx.get("event_counts", event.aggregate_id) or {"id": event.aggregate_id, "events": 0}
        tx.upsert("event_counts", {**row, "events": row["events"] + 1, "last_version": event.aggregate_version})


class Crash(Exception):
    pass


class CrashingProjection(CountingProjection):
    def __init__(self, crash_after: int) -> None:
        self.left = crash_after

    def apply(self, event: EventEnvelope, tx: ReadModelTx) -> None:
        if self.left == 0:
            raise Crash()
        self.left -= 1
        super().apply(event, tx)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories(), st.lists(st.integers(0, 10), max_size=5), st.integers(1, 7))
def test_live_projection_with_crashes_equals_rebuild(events: list[EventEnvelope], crashes: list[int], batch: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        log = ListLog(events)
        live = SQLiteReadModelStore(Path(d) / "live.sqlite3")
        for crash_after in crashes:  # a projector that dies mid-batch, then restarts
            projector = Projector(CrashingProjection(crash_after), live)
            try:
                projector.catch_up(log, batch=batch)
            except Crash:
                pass
        projector = Projector(CountingProjection(), live)
        projector.catch_up(log, batch=batch)
        # deliver everything again: a redelivery must change nothing
        projector.handle(events)

        clean = SQLiteReadModelStore(Path(d) / "clean.sqlite3")
        clean.install(CountingProjection.tables)
        rebuild(CountingProjection(), clean, log, batch=batch)  # windows of the log, small and growing

        assert live.rows("event_counts", order_by="id") == clean.rows("event_counts", order_by="id")
        assert live.position("event_counts") == clean.position("event_counts") == log.head()
        counted = sum(r["events"] for r in clean.rows("event_counts"))
        assert counted == sum(e.event_type in CountingProjection.event_types for e in events)
        live.close()
        clean.close()


def test_rebuild_processes_are_balanced_by_the_events_their_projections_read() -> None:
    class Reads:
        def __init__(self, *types: str) -> None:
            self.event_types = frozenset(types)

    projections = {"a": Reads("X"), "b": Reads("Y", "Z"), "c": Reads("W"), "d": Reads(), "e": Reads("U")}
    counts = {"X": 5, "Y": 2, "Z": 4, "W": 5, "U": 1, "V": 100}
    # the most first (b 6, a 5, c 5, e 1, d 0), each to the group reading fewest so far
    assert plan_processes(["a", "b", "c", "d", "e"], projections, counts, 2) == [["b", "e", "d"], ["a", "c"]]
    assert plan_processes(["a", "b", "c", "d", "e"], projections, counts, 3) == [["b"], ["a", "e"], ["c", "d"]]
    assert plan_processes(["a", "b", "c", "d", "e"], projections, counts, 1) == [["b", "a", "c", "e", "d"]]
    assert plan_processes(["a", "c"], projections, counts, 8) == [["a"], ["c"]]  # never an empty group
    assert plan_processes([], projections, counts, 2) == []
    for workers in range(1, 7):  # every projection in exactly one group
        groups = plan_processes(list(projections), projections, counts, workers)
        assert sorted(n for g in groups for n in g) == sorted(projections) and all(groups)
