"""Rebuild a projection from the event store into scratch tables, then swap
them in: reads keep working on the old tables until the swap."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence

from adapters.eventstore import EventLog
from adapters.readmodels import ReadModelStore, ReadModelTx, Scratch
from projections.base import Projection
from projections.projector import apply_batch

Progress = Callable[[int, int], None]  # (position reached, head)
Target = tuple[Projection, ReadModelStore]  # a projection and the store it is kept in


def rebuild(projection: Projection, store: ReadModelStore, log: EventLog, *, fresh: bool = False,
            batch: int = 5000, progress: Progress | None = None) -> int:
    """Returns the position the rebuilt projection is at. Resumes an
    interrupted rebuild unless `fresh`."""
    return rebuild_together([(projection, store)], log, fresh=fresh, batch=batch, progress=progress)[projection.name]


def rebuild_together(targets: Sequence[Target], log: EventLog, *, fresh: bool = False, batch: int = 5000,
                     progress: Progress | None = None) -> dict[str, int]:
    """Rebuilds several projections from one read of the log (reading and
    decoding events costs more than most projections' work), then swaps
    each in; returns each one's position. Each resumes where its own
    interrupted rebuild stopped."""
    starts = [store.start_rebuild(p.name, p.tables, fresh=fresh) for p, store in targets]
    replay(targets, log, min(starts), log.head, scratch=True, batch=batch, progress=progress)
    return {p.name: store.swap(p.name, p.tables, catch_up_from(p, log, batch)) for p, store in targets}


def replay(targets: Sequence[Target], log: EventLog, position: int, target: Callable[[], int],
           *, scratch: Scratch, batch: int = 5000, progress: Progress | None = None) -> int:
    """Applies the log from `position` to `target()` into a copy of each
    projection's tables, one transaction per window of the log and
    projection (resumable: events at or below a copy's position are
    skipped); returns the position reached. Only the kinds of events the
    targets read are fetched and decoded; each window moves every copy's
    position to its end, events or none. Bulk, then one more pass for what
    arrived meanwhile: each pass stops at the target seen when it began, so
    sustained writes cannot keep it from finishing; the last few are applied
    under the live lock (`swap`, `compare`) by `catch_up_from`."""
    types = frozenset().union(*(p.event_types for p, _ in targets))
    for _ in range(2):
        head = target()
        # the next window is read and decoded while this one is written
        for events, end in _prefetched(log, types, position, head, batch):
            for projection, store in targets:
                with store.transaction(projection.name, scratch=scratch) as tx:
                    apply_batch(projection, tx, events)
                    if end > tx.position:
                        tx.set_position(end)
            position = end
            if progress:
                progress(position, head)
    return position


def catch_up_from(projection: Projection, log: EventLog, batch: int = 5000) -> Callable[[ReadModelTx, int, int], None]:
    """The `catch_up(tx, frm, to)` that `swap` and `compare` call under the lock."""

    def catch_up(tx: ReadModelTx, frm: int, to: int) -> None:
        for events, end in windows(log, projection.event_types, frm, to, batch):
            apply_batch(projection, tx, events)
            tx.flush()  # type: ignore[attr-defined]
            if end > frm:
                tx.set_position(end)

    return catch_up


def windows(log: EventLog, types: frozenset[str], after: int, upto: int, batch: int) -> Iterator[tuple[list, int]]:
    """(events, end) for consecutive windows (at, end] of the log up to
    `upto`: the events of `types` in each. A window spans `batch` positions,
    and grows while the wanted events are sparse, up to 64 times that."""
    at, span = after, batch
    while at < upto:
        end = min(at + span, upto)
        events = log.scan(at, end, types)
        yield events, end
        at = end
        span = min(span * 2, batch * 64) if len(events) < batch // 2 else batch


def _prefetched(log: EventLog, types: frozenset[str], after: int, upto: int, batch: int) -> Iterator[tuple[list, int]]:
    """`windows`, read one window ahead in a thread."""
    pages: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for page in windows(log, types, after, upto, batch):
                if stop.is_set():
                    return
                pages.put(page)
            pages.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            pages.put(e)

    reader = threading.Thread(target=read, name="rebuild-reader", daemon=True)
    reader.start()
    try:
        while True:
            page = pages.get()
            if isinstance(page, BaseException):
                raise page
            if page is done:
                return
            yield page
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                pages.get_nowait()
            except queue.Empty:
                reader.join(0.05)
