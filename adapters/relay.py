"""The relay: follows the event store's notification log and publishes every
event to the bus, exactly once and in log order.

Its position is the stream itself: the last message JetStream acknowledged
carries the log position it came from, so after any crash the relay resumes
right after it. Each publish names the message it must follow
(`Nats-Expected-Last-Msg-Id`), so a lost or duplicated publish cannot reorder
or double the stream; `Nats-Msg-Id` drops retried duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from adapters.bus import ChainBroken, EventBus
from adapters.errors import ServiceUnavailable
from adapters.eventstore import EventLog

log = structlog.get_logger("relay")


class Relay:
    """`bus` is a connected bus, or a coroutine function that connects one
    (then the relay also waits out a broker that is down at start)."""

    def __init__(self, event_log: EventLog, bus: EventBus | Callable[[], Awaitable[EventBus]], *,
                 batch: int = 1000, idle: float = 0.02) -> None:
        self.log, self.batch, self.idle = event_log, batch, idle
        self._connect = bus if callable(bus) else None
        self.bus: EventBus | None = None if callable(bus) else bus
        self.published = 0
        self.position = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                if self.bus is None:
                    assert self._connect is not None
                    self.bus = await self._connect()
                    log.info("relay_connected")
                await self._publish_until(stop)
                backoff = 0.2
            except ChainBroken as e:
                log.warning("relay_chain_broken", reason=str(e))
            except (ServiceUnavailable, OSError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001
                log.warning("relay_waiting", error=str(e) or type(e).__name__, retry_in=backoff,
                            published=self.published)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _publish_until(self, stop: asyncio.Event) -> None:
        assert self.bus is not None
        _, self.position, last_id = await self.bus.last()
        log.info("relay_resumed", position=self.position)
        while not stop.is_set():
            events = await asyncio.to_thread(self.log.read, self.position, self.batch)
            if not events:
                await _sleep_or_stop(stop, self.idle)
                continue
            await self.bus.publish(events, last_id)
            self.position, last_id = events[-1].position, events[-1].event_id
            self.published += len(events)

    async def drain(self, timeout: float = 30.0) -> int:
        """Publish everything recorded so far, then return (tests, benchmarks)."""
        stop = asyncio.Event()
        deadline = time.monotonic() + timeout
        head = await asyncio.to_thread(self.log.head)
        task = asyncio.create_task(self.run(stop))
        try:
            while self.position < head:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"relay reached {self.position} of {head}")
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await task
        return self.position


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
