"""The live host dashboard: the WebSocket `/sessions/{id}/live` and the
GraphQL subscription `sessionLive` share one `LiveFeed` per API process.

How a change reaches a dashboard:
1. The attendance projector commits the change's row in `session_changes`
   (`seq` = the event's log position) together with its own position.
2. The feed follows the bus (JetStream in full mode, the in-process bus in
   embedded mode) from its end. For each attendance event it waits until the
   projection's position reaches the event's, then wakes the watchers of the
   event's session.
3. A watcher sends its session's rows with `seq` above the last it sent.

No gap, no duplicate: a watcher registers before its first read, so every
change committed after that read is followed by a wake; positions commit in
order, so when the row `S` is readable every change before it is too; rows
are sent in `seq` order, each once. A client that reconnects with
`after=S` resumes exactly there. Watchers also re-read every `FALLBACK_POLL`
seconds: that covers a bus that fails, and the one change in flight while a
process had no watcher at all (the feed skips events nobody watches).

Messages (JSON): `{"type": "snapshot", "seq": N, "stats": {...}}` first
(unless `after` is given), then `{"type": "change", "seq": S, "kind", "user_id",
"checkin_id", "gate", "direction", "reason", "by", "at", "stats"}` per change.
Refusals: `{"type": "error", "code", "message"}`, then the socket closes with
4000 + the HTTP status (4401 not signed in, 4403 not a host, 4404 no such
session, 4422 a bad `after`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from adapters.bus import EventBus
from adapters.readmodels import ReadModelStore
from api.graphql_attendance import hosted_session
from domain.authorization import NotSignedIn
from domain.envelope import EventEnvelope
from domain.errors import DomainError, InvalidInput
from projections.attendance import AttendanceProjection, dashboard_stats

log = structlog.get_logger("live")
router = APIRouter(tags=["attendance"])

WATCHED = AttendanceProjection.event_types - {"RosterOpened", "PresenceBegan"}  # the ones that make changes
VERDICTS = frozenset({"CheckInSucceeded", "CheckInFailed", "CheckInConflicted", "CheckInAnnulled"})
FALLBACK_POLL = 1.0  # seconds between re-reads when no wake comes
POSITION_POLL = 0.003  # seconds between reads of the projection's position while it is behind the bus
PAGE = 500  # changes read at a time
RETRY = 1.0  # seconds before following the bus again after an error
READ_THREADS = 4
T = TypeVar("T")


class LiveFeed:
    """Wakes a session's dashboards when its changes are readable."""

    def __init__(self, readmodels: ReadModelStore, clock: Callable[[], dt.datetime]) -> None:
        self.rm, self.clock = readmodels, clock
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._applied = 0  # the attendance projection's position, as last read
        self._next_seq = 0  # the bus sequence to follow from (0: its end, once connected)
        self._bus: EventBus | None = None
        # its own threads: reads for dashboards never queue behind commands' work in the default executor
        self._reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="live")

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, fn, *args)

    # ------------------------------------------------------------ the feed
    async def run(self, bus: EventBus | Callable[[], Awaitable[EventBus]], stop: asyncio.Event) -> None:
        """Follow `bus` (or the one `bus()` connects, closed at the end) until
        `stop`. After an error: wake every watcher (they re-read), wait
        `RETRY`, go on from the next message."""
        connect = bus if callable(bus) else None
        self._bus = None if connect else bus  # type: ignore[assignment]
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                attempt = asyncio.create_task(self._connect_and_follow(connect))
                await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done():
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    break
                try:
                    attempt.result()
                except Exception as e:  # noqa: BLE001 - logged; the watchers poll meanwhile
                    log.warning("live_feed_interrupted", error=str(e) or type(e).__name__, retry_in=RETRY)
                    self._wake_all()
                    await asyncio.wait({stopping}, timeout=RETRY)
        finally:
            stopping.cancel()
            if connect is not None and self._bus is not None:
                await self._bus.close()

    async def _connect_and_follow(self, connect: Callable[[], Awaitable[EventBus]] | None) -> None:
        if self._bus is None:
            self._bus = await connect()  # type: ignore[misc]
        if not self._next_seq:  # from the end: what is already there, dashboards read from the tables
            self._next_seq = (await self._bus.last())[0] + 1
        await self._follow(self._bus)

    async def _follow(self, bus: EventBus) -> None:
        """Take the bus's messages as they come; handle what arrived meanwhile as one batch."""
        queue: asyncio.Queue[EventEnvelope | Exception] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for seq, env in bus.stream(self._next_seq):
                    self._next_seq = seq + 1
                    if env.event_type in WATCHED and self._watchers:
                        queue.put_nowait(env)
            except Exception as e:  # noqa: BLE001 - handed to the loop below, which raises it
                queue.put_nowait(e)

        pumping = asyncio.create_task(pump())
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                failed = next((e for e in batch if isinstance(e, Exception)), None)
                if failed is not None:
                    raise failed
                await self._wake(batch)  # type: ignore[arg-type]
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)

    async def _wake(self, batch: list[EventEnvelope]) -> None:
        """Once the projection has applied the batch, wake the watchers of its sessions."""
        await self._until_applied(batch[-1].position)
        sessions = {e.data["session_id"] for e in batch if e.event_type not in VERDICTS}
        attempted = {e.aggregate_id for e in batch if e.event_type == "CheckInAttempted"}
        elsewhere = [e.aggregate_id for e in batch if e.event_type in VERDICTS and e.aggregate_id not in attempted]
        if elsewhere:  # a verdict names no session: its attempt's row does
            rows = await self._read(self.rm.rows, "checkins", None, None, None, [("id", "in", elsewhere)])
            sessions |= {r["session_id"] for r in rows}
        for session in sessions:
            for wake in self._watchers.get(session, ()):
                wake.set()

    async def _until_applied(self, position: int) -> None:
        while self._applied < position:
            self._applied = await self._read(self.rm.position, AttendanceProjection.name)
            if self._applied < position:
                await asyncio.sleep(POSITION_POLL)

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    # ------------------------------------------------------------ watchers
    async def messages(self, session_id: str, after: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """A snapshot (unless `after`), then the session's changes past it,
        for as long as the caller iterates."""
        wake = asyncio.Event()
        self._watchers.setdefault(session_id, set()).add(wake)
        try:
            if after is None:
                stats = await self._read(self.rm.get, "session_stats", session_id)
                last = stats["last_seq"] if stats else 0
                yield {"type": "snapshot", "seq": last, "stats": dashboard_stats(stats, self.clock())}
            else:
                last = after
            while True:
                wake.clear()
                rows = await self._read(self.rm.rows, "session_changes", {"session_id": session_id}, "seq", PAGE,
                                        [("seq", ">", last)])
                for row in rows:
                    last = row["seq"]
                    yield {"type": "change", "seq": last, **row["change"]}
                if len(rows) < PAGE:
                    try:
                        await asyncio.wait_for(wake.wait(), FALLBACK_POLL)
                    except asyncio.TimeoutError:
                        pass
        finally:
            watchers = self._watchers.get(session_id, set())
            watchers.discard(wake)
            if not watchers:
                self._watchers.pop(session_id, None)


# ---------------------------------------------------------------- WebSocket
def _after(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidInput("after is a seq this feed sent (a whole number)", field="after")
    return int(raw)


@router.websocket("/sessions/{session_id}/live")
async def session_live(websocket: WebSocket, session_id: str) -> None:
    """A session's live dashboard, for its hosts (and platform admins). Sign
    in with `?access_token=` or `Authorization: Bearer`; `?after=S` resumes
    after the change `S`."""
    await websocket.accept()
    container = websocket.app.state.container
    try:
        after = _after(websocket.query_params.get("after"))
        header = websocket.headers.get("authorization", "")
        token = websocket.query_params.get("access_token") or (header[7:].strip() if
                                                               header.lower().startswith("bearer ") else "")
        if not token:
            raise NotSignedIn("sign in: ?access_token= or Authorization: Bearer")
        who = await asyncio.to_thread(container.app.principal, token)
        await asyncio.to_thread(hosted_session, container.readmodels, who, session_id)
    except DomainError as e:
        await websocket.send_json({"type": "error", "code": e.code, "message": e.message})
        await websocket.close(code=4000 + e.status)
        return
    log.info("dashboard_opened", session_id=session_id, user_id=str(who.user_id), after=after)
    await _send(websocket, websocket.app.state.live.messages(session_id, after))


async def _send(websocket: WebSocket, messages: AsyncIterator[dict[str, Any]]) -> None:
    """Send until the client goes (noticed even while nothing changes)."""

    async def send() -> None:
        async for message in messages:
            await websocket.send_json(message)

    async def until_closed() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = {asyncio.create_task(send()), asyncio.create_task(until_closed())}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await messages.aclose()  # type: ignore[attr-defined]
    for t in done:
        error = t.exception()
        if error is not None and not isinstance(error, (WebSocketDisconnect, OSError)):
            raise error
