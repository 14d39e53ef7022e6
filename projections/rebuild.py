"""Rebuild a projection from the event store into scratch tables, then swap
them in: reads keep working on the old tables until the swap."""

from __future__ import annotations

from collections.abc import Callable

from adapters.eventstore import EventLog
from adapters.readmodels import ReadModelStore, ReadModelTx
from projections.base import Projection
from projections.projector import apply_batch

Progress = Callable[[int, int], None]  # (position reached, head)


def rebuild(projection: Projection, store: ReadModelStore, log: EventLog, *, fresh: bool = False,
            batch: int = 2000, progress: Progress | None = None) -> int:
    """Returns the position the rebuilt projection is at. Resumes an
    interrupted rebuild unless `fresh`."""
    name = projection.name
    position = store.start_rebuild(name, projection.tables, fresh=fresh)
    head = log.head()
    while True:  # bulk: scratch tables, one transaction per batch (resumable)
        events = log.read(position, batch)
        if not events:
            break
        with store.transaction(name, scratch=True) as tx:
            apply_batch(projection, tx, events)
        position = events[-1].position
        if progress:
            progress(position, max(head, position))

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
