"""Where the notifier reads events from. Port `EventIntake`:

`run(handle, stop)` calls `await handle(envelope)` for every event, at least
once, until `stop` is set. An event whose `handle` returned is not handed to
this group again, even after a restart; one whose `handle` raised (or whose
process died) is handed again later. Tested by
tests/contract/test_event_intake.py against both adapters.

- `JetStreamIntake` (full mode): a durable pull consumer shared by every
  notifier process (a work queue: each message goes to one of them, acked
  after it is handled; unacked ones are redelivered after `ack_wait`).
- `LogIntake` (embedded): follows the event log, keeping its position in the
  read-model store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from adapters.bus import NATS_SETTING, SUBJECTS, JetStreamBus
from adapters.errors import ServiceUnavailable
from adapters.eventstore import EventLog
from adapters.readmodels import ReadModelStore
from domain.envelope import EventEnvelope

log = structlog.get_logger("notifier")

Handler = Callable[[EventEnvelope], Awaitable[object]]
Wanted = Callable[[str], bool]  # by event type: the rest is acknowledged unread


def _everything(_: str) -> bool:
    return True


class EventIntake(Protocol):
    async def run(self, handle: Handler, stop: asyncio.Event, wants: Wanted = _everything) -> None: ...


class LogIntake:
    def __init__(self, event_log: EventLog, store: ReadModelStore, name: str = "notifier", batch: int = 100,
                 idle: float = 0.1) -> None:
        self.log, self.store, self.name, self.batch, self.idle = event_log, store, name, batch, idle

    async def run(self, handle: Handler, stop: asyncio.Event, wants: Wanted = _everything) -> None:
        position = await asyncio.to_thread(self.store.position, self.name)
        while not stop.is_set():
            events = await asyncio.to_thread(self.log.read, position, self.batch)
            if not events:
                try:
                    await asyncio.wait_for(stop.wait(), self.idle)
                except asyncio.TimeoutError:
                    pass
                continue
            await asyncio.gather(*(handle(ev) for ev in events if wants(ev.event_type)))  # an error: all again
            position = events[-1].position
            await asyncio.to_thread(self._save, position)

    def _save(self, position: int) -> None:
        with self.store.transaction(self.name) as tx:
            tx.set_position(position)


class JetStreamIntake:
    def __init__(self, url: str, namespace: str = "", durable: str = "notifier", batch: int = 32,
                 ack_wait: float = 30.0) -> None:
        self.url, self.namespace, self.durable = url, namespace, durable
        self.batch, self.ack_wait = batch, ack_wait

    async def run(self, handle: Handler, stop: asyncio.Event, wants: Wanted = _everything) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        bus = await JetStreamBus.connect(self.url, namespace=self.namespace)
        try:
            sub = await bus.js.pull_subscribe(  # type: ignore[attr-defined]
                bus.prefix + SUBJECTS, durable=self.durable, stream=bus.stream_name,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_deliver=-1,
                                      deliver_policy=DeliverPolicy.ALL, max_ack_pending=self.batch * 64))
        except Exception as e:  # noqa: BLE001 - translated
            await bus.close()
            raise ServiceUnavailable("NATS JetStream", NATS_SETTING, self.url, e) from e

        async def one(msg: object) -> None:
            if not wants((msg.headers or {}).get("AttendWise-Event-Type", "")):  # type: ignore[attr-defined]
                await msg.ack()  # type: ignore[attr-defined]  # nothing to tell anyone: not even decoded
                return
            try:
                await handle(EventEnvelope.from_json(msg.data))  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - logged; JetStream redelivers it
                log.exception("notification_intake_failed", subject=msg.subject)  # type: ignore[attr-defined]
                await msg.nak(delay=1.0)  # type: ignore[attr-defined]
                return
            await msg.ack()  # type: ignore[attr-defined]

        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self.batch, timeout=0.5)
                except (NatsTimeout, asyncio.TimeoutError):
                    continue
                await asyncio.gather(*(one(m) for m in msgs))
        finally:
            try:
                await sub.unsubscribe()
            finally:
                await bus.close()
