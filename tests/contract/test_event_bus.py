"""Contract of the event bus, against the in-process bus and real JetStream."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from adapters.bus import ChainBroken, EventBus, InProcessBus, JetStreamBus
from adapters.errors import ServiceUnavailable
from domain.envelope import EventEnvelope


def envelope(position: int) -> EventEnvelope:
    return EventEnvelope(position=position, event_id=str(uuid.uuid4()), event_type="UserRegistered",
                         context="identity", aggregate_id=str(uuid.uuid4()), aggregate_version=1,
                         timestamp="2026-01-01T00:00:00+00:00", schema_version=2, actor="anonymous",
                         command_id=str(uuid.uuid4()), data={"n": position})


@pytest.fixture(params=["inprocess", "jetstream"])
def make_bus(request: pytest.FixtureRequest):
    if request.param == "inprocess":
        async def make() -> EventBus:
            return InProcessBus()
    else:
        url, ns = request.getfixturevalue("nats_url"), request.getfixturevalue("nats_namespace")

        async def make() -> EventBus:
            return await JetStreamBus.connect(url, namespace=ns)
    return make


async def take(bus: EventBus, start: int, n: int) -> list[tuple[int, EventEnvelope]]:
    out = []
    it = bus.stream(start)
    async for item in it:
        out.append(item)
        if len(out) == n:
            break
    await it.aclose()
    return out


def test_published_events_stream_back_in_order(make_bus) -> None:
    async def run() -> None:
        bus = await make_bus()
        assert await bus.last() == (0, 0, None)
        evs = [envelope(p) for p in (3, 5, 9)]
        await bus.publish(evs[:2], None)
        await bus.publish(evs[2:], evs[1].event_id)
        assert await bus.last() == (3, 9, evs[2].event_id)
        got = await take(bus, 1, 3)
        assert [s for s, _ in got] == [1, 2, 3]
        assert [e for _, e in got] == evs
        assert await bus.first_seq_after(0) == 1
        assert await bus.first_seq_after(5) == 3
        assert await bus.first_seq_after(9) == 4
        await bus.close()

    asyncio.run(run())


def test_stream_waits_for_new_messages(make_bus) -> None:
    async def run() -> None:
        bus = await make_bus()
        first = envelope(1)
        reader = asyncio.create_task(take(bus, 1, 2))
        await bus.publish([first], None)
        await asyncio.sleep(0.2)
        assert not reader.done()
        second = envelope(2)
        await bus.publish([second], first.event_id)
        got = await asyncio.wait_for(reader, 5)
        assert [e for _, e in got] == [first, second]
        await bus.close()

    asyncio.run(run())


def test_a_duplicate_event_id_is_dropped(make_bus) -> None:
    async def run() -> None:
        bus = await make_bus()
        ev = envelope(1)
        await bus.publish([ev], None)
        await bus.publish([ev], ev.event_id)  # a retry after a lost acknowledgement
        assert (await bus.last())[0] == 1
        await bus.close()

    asyncio.run(run())


def test_publishing_after_the_wrong_tail_is_refused(make_bus) -> None:
    async def run() -> None:
        bus = await make_bus()
        a, b = envelope(1), envelope(2)
        await bus.publish([a], None)
        with pytest.raises(ChainBroken):
            await bus.publish([b], "not-the-tail")
        with pytest.raises(ChainBroken):
            await bus.publish([b], None)
        assert await bus.last() == (1, 1, a.event_id)
        await bus.close()

    asyncio.run(run())


def test_unreachable_nats_names_the_service_and_setting() -> None:
    async def run() -> None:
        with pytest.raises(ServiceUnavailable) as e:
            await JetStreamBus.connect("nats://127.0.0.1:1", timeout=1)
        assert "NATS" in str(e.value) and "ATTENDWISE_NATS_URL" in str(e.value)

    asyncio.run(run())


def test_an_empty_stream_is_followed_from_its_first_message(make_bus) -> None:
    async def run() -> None:
        bus = await make_bus()
        start = await bus.first_seq_after(0)
        reader = asyncio.create_task(take(bus, start, 1))
        ev = envelope(4)
        await bus.publish([ev], None)
        assert [e for _, e in await asyncio.wait_for(reader, 5)] == [ev]
        await bus.close()

    asyncio.run(run())


def test_a_reader_takes_a_backlog_in_a_few_turns_of_a_busy_event_loop(make_bus) -> None:
    """A reader on a busy event loop (an API under load, where every turn of
    the loop also serves requests: here half a millisecond of work) keeps up
    only if it takes what has arrived without giving the loop back for each
    message. Counted in turns of the loop from the first message on, so
    neither the machine's speed nor the wait for the subscription matters."""
    n = 2000

    async def run() -> None:
        bus = await make_bus()
        evs = [envelope(p) for p in range(1, n + 1)]
        for start in range(0, n, 500):
            await bus.publish(evs[start:start + 500], evs[start - 1].event_id if start else None)
        turns, got = 0, []

        async def busy() -> None:
            nonlocal turns
            while True:
                time.sleep(0.0005)  # a request's work, holding the loop
                turns += 1 if got else 0
                await asyncio.sleep(0)

        working = asyncio.create_task(busy())
        it = bus.stream(1)
        async for item in it:
            got.append(item)
            if len(got) == n:
                break
        await it.aclose()
        working.cancel()
        assert [e.event_id for _, e in got] == [e.event_id for e in evs]
        assert turns < n / 4, f"{turns} turns of the event loop for {n} messages"
        await bus.close()
    asyncio.run(run())
