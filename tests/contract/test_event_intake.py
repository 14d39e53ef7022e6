"""Contract of the notifier's event intake, against the event-log follower
(embedded; its position in SQLite or PostgreSQL read models) and JetStream's
shared durable consumer. Real events from a real event store."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.bus import JetStreamBus
from adapters.eventstore import ApplicationEventLog, open_event_store
from adapters.notify_intake import EventIntake, JetStreamIntake, LogIntake
from adapters.readmodels import PostgresReadModelStore, SQLiteReadModelStore
from commands.messages import CommandContext, RegisterUser
from domain.envelope import EventEnvelope


class Source:
    """Appends real events, and makes intakes of one group reading them."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.app = open_event_store(None, tmp_path / "events.sqlite3")
        self.log = ApplicationEventLog(self.app)
        self.published = 0
        if kind == "jetstream":
            self.url, self.ns = request.getfixturevalue("nats_url"), request.getfixturevalue("nats_namespace")
        else:
            self.store = (PostgresReadModelStore(request.getfixturevalue("pg_url")) if kind == "log-postgres"
                          else SQLiteReadModelStore(tmp_path / "readmodels.sqlite3"))

    def append(self, n: int) -> list[str]:
        start = self.log.head()
        for i in range(n):
            self.app.register_user(RegisterUser(f"p{start + i}-{i}@example.org", "P"), CommandContext())
        events = self.log.read(start, 10_000)
        if self.kind == "jetstream":
            asyncio.run(self._publish(events))
        return [e.event_id for e in events]

    async def _publish(self, events: list[EventEnvelope]) -> None:
        bus = await JetStreamBus.connect(self.url, namespace=self.ns)
        _, _, last = await bus.last()
        await bus.publish(events, last)
        await bus.close()

    def intake(self) -> EventIntake:
        if self.kind == "jetstream":
            return JetStreamIntake(self.url, self.ns, durable="contract", batch=8, ack_wait=5)
        return LogIntake(self.log, self.store, name="contract", batch=8, idle=0.02)


@pytest.fixture(params=["log-sqlite", "log-postgres", "jetstream"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    return Source(request.param, tmp_path, request)


async def run_until(intakes: list[EventIntake], handle: Callable, done: Callable[[], bool],
                    timeout: float = 20) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(i.run(handle, stop)) for i in intakes]
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # anything more would show now
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def test_every_event_is_handled_and_a_handled_one_never_comes_again(source: Source) -> None:
    first = source.append(20)
    seen: list[str] = []

    async def handle(env: EventEnvelope) -> None:
        seen.append(env.event_id)

    asyncio.run(run_until([source.intake()], handle, lambda: set(first) <= set(seen)))
    assert Counter(seen) == Counter(first)  # each once
    later = source.append(5)
    seen.clear()
    asyncio.run(run_until([source.intake()], handle, lambda: set(later) <= set(seen)))  # a restarted intake
    assert sorted(seen) == sorted(later)


def test_an_event_whose_handling_failed_is_handed_again(source: Source) -> None:
    ids = source.append(6)
    seen: list[str] = []
    failed: set[str] = set()

    async def handle(env: EventEnvelope) -> None:
        if env.event_id == ids[2] and env.event_id not in failed:
            failed.add(env.event_id)
            raise RuntimeError("the SMTP server fell over")
        seen.append(env.event_id)

    async def supervised(intake: EventIntake, stop: asyncio.Event) -> None:
        while not stop.is_set():  # as api.notifier supervises its intake: an error restarts it
            try:
                await intake.run(handle, stop)
            except RuntimeError:
                await asyncio.sleep(0.05)

    class Restarting:
        def __init__(self) -> None:
            self.inner = source.intake()

        async def run(self, h: Callable, stop: asyncio.Event) -> None:
            await supervised(self.inner, stop)

    asyncio.run(run_until([Restarting()], handle, lambda: set(ids) <= set(seen)))  # type: ignore[list-item]
    assert set(seen) == set(ids) and ids[2] in failed


def test_processes_of_one_group_share_the_work(source: Source) -> None:
    if source.kind != "jetstream":
        pytest.skip("the event-log follower is the embedded default: one process")
    ids = source.append(40)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler(name: str) -> Callable:
        async def handle(env: EventEnvelope) -> None:
            await asyncio.sleep(0.01)
            seen[name].append(env.event_id)
        return handle

    async def both() -> None:
        stop = asyncio.Event()
        a, b = source.intake(), source.intake()
        tasks = [asyncio.create_task(a.run(handler("a"), stop)), asyncio.create_task(b.run(handler("b"), stop))]
        async with asyncio.timeout(20):
            while len(seen["a"]) + len(seen["b"]) < len(ids):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(both())
    assert sorted(seen["a"] + seen["b"]) == sorted(ids)  # each event to one of them
    assert seen["a"] and seen["b"]  # and both did some


def test_unwanted_events_are_passed_over_and_not_handed_again(source: Source) -> None:
    ids = source.append(6)  # a registration is two events: UserRegistered and EmailAddressClaimed
    seen: list[EventEnvelope] = []

    async def handle(env: EventEnvelope) -> None:
        seen.append(env)

    def registered(event_type: str) -> bool:
        return event_type == "UserRegistered"

    class Filtered:
        def __init__(self) -> None:
            self.inner = source.intake()

        async def run(self, h: Callable, stop: asyncio.Event) -> None:
            await self.inner.run(h, stop, registered)

    asyncio.run(run_until([Filtered()], handle, lambda: len(seen) >= 6))  # type: ignore[list-item]
    assert len(ids) == 12 and sorted(e.event_type for e in seen) == ["UserRegistered"] * 6
    seen.clear()
    later = source.append(1)
    asyncio.run(run_until([source.intake()], handle, lambda: set(later) <= {e.event_id for e in seen}))
    assert sorted(e.event_id for e in seen) == sorted(later)  # the passed-over ones were acknowledged
