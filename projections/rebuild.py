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
    projection's tables, one transaction per batch and projection
    (resumable: events at or below a copy's position are skipped); returns
    the position reached. Bulk, then one more pass for what arrived
    meanwhile: each pass stops at the target seen when it began, so
    sustained writes cannot keep it from finishing; the last few are applied
    under the live lock (`swap`, `compare`) by `catch_up_from`."""
    for _ in range(2):
        head = target()
        # the next batch is read and decoded while this one is written
        for events in _prefetched(log, position, batch, upto=head):
            for projection, store in targets:
                with store.transaction(projection.name, scratch=scratch) as tx:
                    apply_batch(projection, tx, events)
            position = events[-1].position
            if progress:
                progress(position, head)
    return position


def catch_up_from(projection: Projection, log: EventLog, batch: int = 5000) -> Callable[[ReadModelTx, int, int], None]:
    """The `catch_up(tx, frm, to)` that `swap` and `compare` call under the lock."""

    def catch_up(tx: ReadModelTx, frm: int, to: int) -> None:
        at = frm
        while at < to:
            events = [e for e in log.read(at, batch) if e.position <= to]
            if not events:
                break
            apply_batch(projection, tx, events)
            at = events[-1].position
            tx.flush()  # type: ignore[attr-defined]

    return catch_up


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
