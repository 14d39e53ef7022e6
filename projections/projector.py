"""Runs a projection: applies events and records the position in one
transaction, so each event takes effect exactly once, whatever crashes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from adapters.bus import EventBus
from adapters.eventstore import EventLog
from adapters.readmodels import ReadModelStore, ReadModelTx
from domain.envelope import EventEnvelope
from projections.base import Projection

log = structlog.get_logger("projector")


def apply_batch(projection: Projection, tx: ReadModelTx, events: Sequence[EventEnvelope]) -> int:
    """Apply, in order, the events past the transaction's position; return how
    many took effect. Events at or below the position were applied before (a
    redelivery after a crash) and are skipped."""
    applied = 0
    last = tx.position
    for ev in events:
        if ev.position <= last:
            continue
        if ev.event_type in projection.event_types:
            projection.apply(ev, tx)
        last = ev.position
        applied += 1
    if last != tx.position:
        tx.set_position(last)
    return applied


class Projector:
    def __init__(self, projection: Projection, store: ReadModelStore) -> None:
        self.projection = projection
        self.store = store
        self._installed = False

    def install(self) -> None:
        """Create the projection's tables (or graph schema) on first use, so a
        process that never runs it (an API in full mode) needs no connection."""
        if not self._installed:
            self.store.install(self.projection.tables)
            self._installed = True

    @property
    def position(self) -> int:
        self.install()
        return self.store.position(self.projection.name)

    def handle(self, events: Sequence[EventEnvelope]) -> int:
        """One batch, one transaction (the bus acknowledges after this returns)."""
        if not events:
            return 0
        self.install()
        with self.store.transaction(self.projection.name) as tx:
            return apply_batch(self.projection, tx, events)

    def catch_up(self, log_: EventLog, batch: int = 1000) -> int:
        """Follow the event log directly (embedded mode, tests): apply
        everything recorded so far; return the number of events applied."""
        total = 0
        while True:
            events = log_.read(self.position, batch)
            if not events:
                return total
            total += self.handle(events)

    def follow(self, log_: EventLog, stop: Callable[[], bool], idle: float = 0.05) -> None:
        """Follow the log until `stop()` says so (embedded mode's in-process loop)."""
        while not stop():
            try:
                if not self.catch_up(log_):
                    time.sleep(idle)
            except Exception:  # noqa: BLE001 - logged, retried: never skip an event
                log.exception("projection_failed", projection=self.projection.name, position=self.position)
                time.sleep(1.0)


async def follow_bus(projector: Projector, event_log: EventLog, bus: EventBus, stop: asyncio.Event,
                     batch: int = 500, linger: float = 0.005) -> None:
    """Full mode: catch up from the event store (the truth), then follow the
    bus from the first message past the projection's position. The bus stream
    is gap-free and in log order (the relay guarantees it), so each batch is
    applied in one transaction together with its position."""

    await asyncio.to_thread(projector.catch_up, event_log)
    start = await bus.first_seq_after(projector.position)
    queue: asyncio.Queue = asyncio.Queue(maxsize=batch * 4)

    async def pump() -> None:
        async for _, env in bus.stream(start):
            await queue.put(env)

    pumper = asyncio.create_task(pump())
    try:
        while not stop.is_set():
            events = []
            try:
                events.append(await asyncio.wait_for(queue.get(), 0.2))
                while len(events) < batch:
                    if queue.empty():
                        await asyncio.sleep(linger)
                        if queue.empty():
                            break
                    events.append(queue.get_nowait())
            except asyncio.TimeoutError:
                pass
            if pumper.done():
                pumper.result()  # re-raise the bus's error
            if events:
                await asyncio.to_thread(projector.handle, events)
    finally:
        pumper.cancel()
