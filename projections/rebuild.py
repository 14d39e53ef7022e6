"""Rebuild a projection from the event store into scratch tables, then swap
them in: reads keep working on the old tables until the swap."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from adapters.eventstore import EventLog
from adapters.readmodels import ReadModelStore, ReadModelTx
from projections.base import Projection
from projections.projector import apply_batch

Progress = Callable[[int, int], None]  # (position reached, head)


def rebuild(projection: Projection, store: ReadModelStore, log: EventLog, *, fresh: bool = False,
            batch: int = 5000, progress: Progress | None = None) -> int:
    """Returns the position the rebuilt projection is at. Resumes an
    interrupted rebuild unless `fresh`."""
    name = projection.name
    position = store.start_rebuild(name, projection.tables, fresh=fresh)
    # Bulk, then one more pass for what arrived meanwhile: each pass stops at
    # the head seen when it began, so sustained writes cannot keep a rebuild
    # from finishing; the swap then applies the last few under the lock.
    for _ in range(2):
        head = log.head()
        # scratch tables, one transaction per batch (resumable); the next
        # batch is read and decoded while this one is written
        for events in _prefetched(log, position, batch, upto=head):
            with store.transaction(name, scratch=True) as tx:
                apply_batch(projection, tx, events)
            position = events[-1].position
            if progress:
                progress(position, head)

    def catch_up(tx: ReadModelTx, frm: int, to: int) -> None:
        at = frm
        while at < to:
            events = [e for e in log.read(at, batch) if e.position <= to]
            if not events:
                break
            apply_batch(projection, tx, events)
            at = events[-1].position
            tx.flush()  # type: ignore[attr-defined]

    return store.swap(name, projection.tables, catch_up)


def _prefetched(log: EventLog, after: int, batch: int, upto: int) -> Iterator[list]:
    """Pages of events in (after, upto], read one page ahead in a thread."""
    pages: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        at = after
        try:
            while not stop.is_set():
                page = [e for e in log.read(at, batch) if e.position <= upto] if at < upto else []
                pages.put(page)
                if not page:
                    return
                at = page[-1].position
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            pages.put(e)

    reader = threading.Thread(target=read, name="rebuild-reader", daemon=True)
    reader.start()
    try:
        while True:
            page = pages.get()
            if isinstance(page, BaseException):
                raise page
            if not page:
                return
            yield page
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                pages.get_nowait()
            except queue.Empty:
                reader.join(0.05)
