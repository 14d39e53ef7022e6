"""Runs a projection: applies events and records the position in one
transaction, so each event takes effect exactly once, whatever crashes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from adapters.bus import EventBus
from adapters.eventstore import EventLog
from adapters.readmodels import ErrorLog, ReadModelStore, ReadModelTx
from domain.envelope import EventEnvelope
from projections.base import Projection

log = structlog.get_logger("projector")
PATIENCE = 2.0  # seconds a projection may hold the shared stream before it follows on its own


def apply_batch(projection: Projection, tx: ReadModelTx, events: Sequence[EventEnvelope]) -> int:
    """Apply, in order, the events past the transaction's position; return how
    many took effect. Events at or below the position were applied before (a
    redelivery after a crash) and are skipped."""
    applied = 0
    last = tx.position
    reads = getattr(projection, "reads", None)
    if reads is not None and hasattr(tx, "prefetch"):  # one query per table, not one per event
        wanted: dict[str, set[str]] = {}
        for ev in events:
            if ev.position > last and ev.event_type in projection.event_types:
                for table, key in reads(ev):
                    wanted.setdefault(table, set()).add(key)
        for table, keys in wanted.items():
            tx.prefetch(table, keys)
    for ev in events:
        if ev.position <= last:
            continue
        if ev.event_type in projection.event_types:
            try:
                projection.apply(ev, tx)
            except Exception as e:
                e.add_note(f"applying {ev.event_type} at position {ev.position} "
                           f"({ev.aggregate_id} v{ev.aggregate_version})")
                raise
        last = ev.position
        applied += 1
    if last != tx.position:
        tx.set_position(last)
    return applied


def describe(error: BaseException) -> str:
    """One error as `projections status` shows it: type, message, notes
    (which event it was applying)."""
    notes = "; ".join(getattr(error, "__notes__", ()))
    return f"{type(error).__name__}: {error}" + (f" ({notes})" if notes else "")


class Projector:
    def __init__(self, projection: Projection, store: ReadModelStore, errors: ErrorLog | None = None) -> None:
        """`errors`: where failures are recorded for `projections status`
        (default: the store, when it is an `ErrorLog`)."""
        self.projection = projection
        self.store = store
        self.errors = errors if errors is not None else (store if isinstance(store, ErrorLog) else None)
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

    def failed(self, error: BaseException) -> None:
        """A batch failed (and was rolled back): log it, and record it where
        `attendwise projections status` shows it until the projection gets
        past it. Recording is best effort: the store may be what failed."""
        name = self.projection.name
        try:
            position = self.store.position(name)
        except Exception:  # noqa: BLE001 - the store itself is down: the log line must still be written
            position = None
        log.error("projection_failed", projection=name, position=position, exc_info=error)
        if self.errors is not None and position is not None:
            try:
                self.errors.record_error(name, position, describe(error))
            except Exception:  # noqa: BLE001 - logged; the projector retries either way
                log.warning("projection_error_not_recorded", projection=name, exc_info=True)

    def follow(self, log_: EventLog, stop: Callable[[], bool], idle: float = 0.05, pause: float = 1.0) -> None:
        """Follow the log until `stop()` says so (embedded mode's in-process loop)."""
        while not stop():
            try:
                if not self.catch_up(log_):
                    time.sleep(idle)
            except Exception as e:  # noqa: BLE001 - logged, recorded, retried: never skip an event
                self.failed(e)
                time.sleep(pause)


async def _retrying(projector: Projector, stop: asyncio.Event, work: Callable[..., object], *args: object,
                    pause: float = 1.0) -> None:
    """Runs `work(*args)` in a thread until it succeeds or `stop` is set; each
    failure is logged and recorded (`Projector.failed`). A batch that fails is
    tried again, never skipped: the projection waits where it is."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(work, *args)
            return
        except Exception as e:  # noqa: BLE001 - recorded and retried
            await asyncio.to_thread(projector.failed, e)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except asyncio.TimeoutError:
                pass


async def follow_bus(projector: Projector, event_log: EventLog, bus: EventBus, stop: asyncio.Event,
                     batch: int = 500, linger: float = 0.005) -> None:
    """Full mode, one projection: catch up from the event store (the truth),
    then follow the bus from the first message past the projection's
    position. The bus stream is gap-free and in log order (the relay
    guarantees it), so each batch is applied in one transaction together
    with its position."""
    await follow_bus_together([projector], event_log, bus, stop, batch=batch, linger=linger)


async def follow_bus_together(projectors: Sequence[Projector], event_log: EventLog, bus: EventBus,
                              stop: asyncio.Event, batch: int = 500, linger: float = 0.005,
                              patience: float = PATIENCE) -> None:
    """`follow_bus` for several projections (`attendwise project`) on one
    subscription: each message is received and decoded once and handed to
    every projection (one per subscription cost the projector process, and
    nats-server, as many deliveries per event as there are projections).

    A projection that cannot keep up does not hold the others: one that has
    not caught up with the log within `patience` seconds at start, or whose
    queue stays full that long (it is failing and being retried, or its
    store is down), leaves the shared stream and follows on its own
    subscription from where it got to."""
    catching = {p: asyncio.create_task(_retrying(p, stop, p.catch_up, event_log)) for p in projectors}
    await asyncio.wait(catching.values(), timeout=patience if len(projectors) > 1 else None)
    ready = [p for p, task in catching.items() if task.done()]
    late = [p for p in projectors if p not in ready]

    async def alone(p: Projector) -> None:
        await catching[p]
        await _stream([p], event_log, bus, stop, batch, linger, patience)

    together = [_stream(ready, event_log, bus, stop, batch, linger, patience)] if ready else []
    await asyncio.gather(*together, *(alone(p) for p in late))


async def _stream(projectors: list[Projector], event_log: EventLog, bus: EventBus, stop: asyncio.Event,
                  batch: int, linger: float, patience: float) -> None:
    """The caught-up `projectors` on one subscription, from the first message
    past the furthest behind."""
    if stop.is_set():
        return
    followers = [_Follower(p, batch * 4) for p in projectors]
    start = min([await bus.first_seq_after(p.position) for p in projectors])
    pumper = asyncio.create_task(_fan_out(bus, start, followers, patience))
    try:
        await asyncio.gather(*(_follow(f, event_log, bus, stop, pumper, batch, linger) for f in followers))
    finally:
        pumper.cancel()


class _Follower:
    def __init__(self, projector: Projector, size: int) -> None:
        self.projector = projector
        self.queue: asyncio.Queue[EventEnvelope] = asyncio.Queue(maxsize=size)
        self.detached = False


async def _fan_out(bus: EventBus, start: int, followers: list[_Follower], patience: float) -> None:
    """The one subscription: every message to every attached follower. A
    full queue is waited on (the slow one sets the pace) for `patience`
    seconds, then its follower is detached; the last one attached is waited
    on for as long as it takes."""
    async for _, env in bus.stream(start):
        for f in followers:
            if f.detached:
                continue
            try:
                f.queue.put_nowait(env)
                continue
            except asyncio.QueueFull:
                pass
            alone = sum(not g.detached for g in followers) == 1
            try:
                await asyncio.wait_for(f.queue.put(env), None if alone else patience)
            except asyncio.TimeoutError:
                f.detached = True
                log.warning("projection_follows_alone", projection=f.projector.projection.name,
                            position=env.position)


async def _follow(f: _Follower, event_log: EventLog, bus: EventBus, stop: asyncio.Event, pumper: asyncio.Task,
                  batch: int, linger: float) -> None:
    while not stop.is_set():
        if f.detached and f.queue.empty():  # everything it was handed is applied: on its own from here
            return await follow_bus_together([f.projector], event_log, bus, stop, batch=batch, linger=linger)
        events = await _take(f.queue, batch, linger)
        if pumper.done():
            pumper.result()  # re-raise the bus's error
        if events:
            await _retrying(f.projector, stop, f.projector.handle, events)


async def _take(queue: asyncio.Queue[EventEnvelope], batch: int, linger: float) -> list[EventEnvelope]:
    """Up to `batch` events: the first within 0.2 s, then whatever arrives
    while the queue does not stay empty for `linger` seconds."""
    events: list[EventEnvelope] = []
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
    return events
