"""The event bus: one ordered stream of every recorded event.

Port `EventBus`; adapters `InProcessBus` (embedded default) and
`JetStreamBus` (NATS JetStream), both tested by tests/contract/test_event_bus.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from adapters.errors import ServiceUnavailable
from domain.envelope import EventEnvelope

STREAM = "ATTENDWISE"
SUBJECTS = "attendwise.>"
STREAM_BACKLOG = 10_000  # messages a stream reader holds before the server is held back
NATS_SETTING = "ATTENDWISE_NATS_URL"


class PublishRejected(Exception):
    def __init__(self, error: dict) -> None:
        self.err_code = error.get("err_code")
        self.description = error.get("description", "rejected")
        super().__init__(f"JetStream refused the publish: {self.description} (err_code {self.err_code})")


class ChainBroken(Exception):
    """The stream's last message is not the one the publisher expected:
    someone else published, or an earlier publish was lost. Re-read `last()`."""


class EventBus(Protocol):
    """Port. Contract:
    - `publish(events, after_event_id)` appends the events in order. The first
      must follow the stream's last message, whose id must be `after_event_id`
      (None for an empty stream), and each next follows the one before: if the
      stream's tail differs, nothing further is appended and `ChainBroken` is
      raised. A message whose event id is already in the stream (recently) is
      dropped as a duplicate. Returns when every message is acknowledged.
    - `last()` -> (stream sequence, log position, event id) of the last
      message, or (0, 0, None) for an empty stream.
    - `first_seq_after(position)` -> the stream sequence of the first message
      whose log position is greater than `position` (last + 1 if none).
    - `stream(start_seq)` yields (sequence, envelope) from `start_seq` on, in
      order and without gaps, waiting for new messages; it ends when the
      iterator is closed.
    Unreachable brokers raise `ServiceUnavailable` naming the setting.
    """

    async def publish(self, events: Sequence[EventEnvelope], after_event_id: str | None) -> None: ...

    async def last(self) -> tuple[int, int, str | None]: ...

    async def first_seq_after(self, position: int) -> int: ...

    def stream(self, start_seq: int) -> AsyncIterator[tuple[int, EventEnvelope]]: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- in-process
class InProcessBus:
    """The stream in memory, for one process (embedded default and tests)."""

    def __init__(self, dedupe_window: int = 100_000) -> None:
        self._messages: list[EventEnvelope] = []
        self._ids: dict[str, int] = {}
        self._window = dedupe_window
        self._changed = asyncio.Condition()

    async def publish(self, events: Sequence[EventEnvelope], after_event_id: str | None) -> None:
        async with self._changed:
            for ev in events:
                if ev.event_id in self._ids and len(self._messages) - self._ids[ev.event_id] < self._window:
                    continue
                tail = self._messages[-1].event_id if self._messages else None
                if tail != after_event_id:
                    raise ChainBroken(f"stream ends with {tail}, publisher expected {after_event_id}")
                self._messages.append(ev)
                self._ids[ev.event_id] = len(self._messages)
                after_event_id = ev.event_id
            self._changed.notify_all()

    async def last(self) -> tuple[int, int, str | None]:
        if not self._messages:
            return 0, 0, None
        m = self._messages[-1]
        return len(self._messages), m.position, m.event_id

    async def first_seq_after(self, position: int) -> int:
        lo, hi = 0, len(self._messages)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._messages[mid].position <= position:
                lo = mid + 1
            else:
                hi = mid
        return lo + 1

    async def stream(self, start_seq: int) -> AsyncIterator[tuple[int, EventEnvelope]]:
        seq = max(start_seq, 1)
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._messages) >= seq)
                batch = self._messages[seq - 1 :]
            for m in batch:
                yield seq, m
                seq += 1

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- JetStream
class JetStreamBus:
    """The stream in NATS JetStream (file storage). Subjects
    `attendwise.<context>.<EventName>`; JSON body; headers carry the event id
    (as Nats-Msg-Id), type, aggregate and log position."""

    def __init__(self, nc: object, js: object, url: str, namespace: str = "") -> None:
        self.nc, self.js, self.url = nc, js, url
        # A namespace keeps several deployments (or test runs) apart on one server.
        self.stream_name = f"{STREAM}_{namespace.upper()}" if namespace else STREAM
        self.prefix = f"{namespace}." if namespace else ""
        self._inbox: str | None = None
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._token = 0

    @classmethod
    async def connect(cls, url: str, *, namespace: str = "", create_stream: bool = True,
                      timeout: float = 5.0) -> "JetStreamBus":
        import nats
        from nats.js.api import StorageType, StreamConfig

        async def _quiet(_e: Exception) -> None:  # logged by callers; keep nats-py from printing
            return None

        try:
            nc = await asyncio.wait_for(
                nats.connect(url, connect_timeout=timeout, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                             allow_reconnect=True, error_cb=_quiet), timeout + 1)
        except (OSError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("NATS JetStream", NATS_SETTING, url, e) from e
        bus = cls(nc, nc.jetstream(timeout=timeout), url, namespace)
        if create_stream:
            try:
                await bus.js.stream_info(bus.stream_name)
            except Exception:  # noqa: BLE001 - absent: create it
                await bus.js.add_stream(StreamConfig(name=bus.stream_name, subjects=[bus.prefix + SUBJECTS],
                                                     storage=StorageType.FILE, duplicate_window=120.0))
        return bus

    async def _ack_inbox(self) -> str:
        """One wildcard inbox for publish acknowledgements. (nats-py's own
        `publish_async` never resolves a future whose publish JetStream
        rejects, so the chain check could not be seen; we read acks here.)"""
        if self._inbox is None:
            self._inbox = self.nc.new_inbox()  # type: ignore[attr-defined]

            async def on_ack(msg: object) -> None:
                fut = self._pending.pop(msg.subject.rsplit(".", 1)[-1], None)  # type: ignore[attr-defined]
                if fut is None or fut.done():
                    return
                try:
                    body = json.loads(msg.data)  # type: ignore[attr-defined]
                except ValueError:
                    body = {"error": {"description": "unreadable acknowledgement"}}
                if "error" in body:
                    fut.set_exception(PublishRejected(body["error"]))
                else:
                    fut.set_result(body.get("seq", 0))

            await self.nc.subscribe(self._inbox + ".*", cb=on_ack)  # type: ignore[attr-defined]
        return self._inbox

    async def publish(self, events: Sequence[EventEnvelope], after_event_id: str | None) -> None:
        inbox = await self._ack_inbox()
        loop = asyncio.get_running_loop()
        futures = []
        for ev in events:
            headers = {
                "Nats-Msg-Id": ev.event_id,
                "AttendWise-Event-Type": ev.event_type,
                "AttendWise-Aggregate-Id": ev.aggregate_id,
                "AttendWise-Position": str(ev.position),
            }
            if after_event_id is None:
                headers["Nats-Expected-Last-Sequence"] = "0"  # the stream must be empty
            else:
                headers["Nats-Expected-Last-Msg-Id"] = after_event_id
            self._token += 1
            token = str(self._token)
            fut = loop.create_future()
            self._pending[token] = fut
            futures.append(fut)
            await self.nc.publish(self.prefix + ev.subject, ev.to_json(), reply=f"{inbox}.{token}",  # type: ignore[attr-defined]
                                  headers=headers)
            after_event_id = ev.event_id
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        except PublishRejected as e:
            if e.err_code in (10070, 10071):  # wrong last msg id / sequence
                raise ChainBroken(e.description) from e
            raise
        except asyncio.TimeoutError as e:
            raise ServiceUnavailable("NATS JetStream", NATS_SETTING, self.url, "publish not acknowledged") from e
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()
            self._pending = {k: f for k, f in self._pending.items() if not f.done()}

    async def _msg(self, seq: int) -> tuple[int, str]:
        m = await self.js.get_msg(self.stream_name, seq)  # type: ignore[attr-defined]
        h = m.headers or {}
        return int(h.get("AttendWise-Position", 0)), h.get("Nats-Msg-Id", "")

    async def last(self) -> tuple[int, int, str | None]:
        info = await self.js.stream_info(self.stream_name)  # type: ignore[attr-defined]
        seq = info.state.last_seq
        if not seq or info.state.messages == 0:
            return seq or 0, 0, None
        pos, msg_id = await self._msg(seq)
        return seq, pos, msg_id

    async def first_seq_after(self, position: int) -> int:
        info = await self.js.stream_info(self.stream_name)  # type: ignore[attr-defined]
        if info.state.messages == 0:
            return info.state.last_seq + 1
        lo, hi = max(info.state.first_seq, 1), info.state.last_seq + 1
        while lo < hi:  # positions grow with the sequence: binary search
            mid = (lo + hi) // 2
            if (await self._msg(mid))[0] <= position:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def stream(self, start_seq: int) -> AsyncIterator[tuple[int, EventEnvelope]]:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        # Messages are taken by callback into a queue read without waiting while
        # it holds any: nats-py's `sub.messages` iterator costs several turns of
        # the event loop per message, and on a busy loop (an API under load) it
        # fell behind the stream for good, holding every message meanwhile.
        # The queue is bounded: a slow reader holds the callback, and JetStream's
        # flow control then holds the server.
        arrived: asyncio.Queue[Any] = asyncio.Queue(maxsize=STREAM_BACKLOG)
        sub = await self.js.subscribe(  # type: ignore[attr-defined]
            self.prefix + SUBJECTS, stream=self.stream_name, ordered_consumer=True, cb=arrived.put,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1)),
            pending_msgs_limit=100_000,
        )
        try:
            while True:
                msg = await arrived.get()
                yield msg.metadata.sequence.stream, EventEnvelope.from_json(msg.data)
        finally:
            await sub.unsubscribe()

    async def close(self) -> None:
        await self.nc.drain()  # type: ignore[attr-defined]
