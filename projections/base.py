"""What a projection is, and the catalogue of projections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope


class Projection(Protocol):
    """A named read model. `apply` must be deterministic: the same events in
    the same order give the same rows, live or in a rebuild."""

    name: str
    tables: Sequence[Table]
    event_types: frozenset[str]  # the events it reads; others only move its position

    def apply(self, event: EventEnvelope, tx: ReadModelTx) -> None: ...

    # Optional: `reads(event) -> Iterable[(table, key)]`, the rows `apply`
    # will `get` for the event. A batch's rows are then read in one query per
    # table before it is applied (`ReadModelTx.prefetch`), not one per event.
