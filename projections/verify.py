"""Verify a projection: replay the event store into a copy of its tables and
compare it, row by row, with the live tables at the same log position.

A projection is deterministic (`projections/base.py`), so a live table that
differs from a replay was changed by something other than its projector (a
hand-made UPDATE, a restored backup, a bug that once let an event apply
twice) or its code changed since the rows were written. The fix in every
case is `attendwise rebuild NAME`.

The copy has its own tables (`rm_<table>__verify`), independent of an
interrupted rebuild's, and is dropped afterwards. The bulk of the replay
runs while the live projector goes on; only the last events (those it
applied meanwhile) and the comparison run holding its lock, as a swap does.

The feed graph has no copy of its own (`verify_graph`): the log is replayed
into another graph store (an embedded one in a temporary file will do), and
whole-graph snapshots are compared, the live one taken between two reads of
its position that agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from adapters.eventstore import EventLog
from adapters.graph import FeedGraph, GraphSnapshot
from adapters.readmodels import VERIFY, Difference, ReadModelStore
from projections.base import Projection
from projections.projector import Projector
from projections.rebuild import Progress, catch_up_from, replay


@dataclass(frozen=True)
class Verification:
    name: str
    position: int  # the log position both sides were compared at
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        return not self.differences


def verify(projection: Projection, store: ReadModelStore, log: EventLog, *, batch: int = 5000,
           limit: int = 1000, progress: Progress | None = None) -> Verification:
    """Differences between the live tables and a fresh replay, at most
    `limit` per table. Never writes to the live tables."""
    name, tables = projection.name, projection.tables
    position = store.start_rebuild(name, tables, fresh=True, scratch=VERIFY)
    try:
        # never past the live projection: the copy must end where it is
        # (it may lag the log), and it only moves forward meanwhile
        live = lambda: store.position(name)  # noqa: E731
        replay([(projection, store)], log, position, live, scratch=VERIFY, batch=batch, progress=progress)
        at, differences = store.compare(name, tables, catch_up_from(projection, log, batch), scratch=VERIFY,
                                        limit=limit)
    finally:
        store.drop_scratch(name, tables, scratch=VERIFY)
    return Verification(name, at, sorted(differences, key=lambda d: (d.table, str(d.key))))


POST_FIELDS = ("author_id", "community_id", "created_at", "likes", "removed")


def verify_graph(projection: Projection, graph: FeedGraph, log: EventLog, scratch: FeedGraph, *,
                 batch: int = 5000, tries: int = 20, limit: int = 1000,
                 progress: Progress | None = None) -> Verification:
    """Differences between the live graph and `scratch` (an empty graph
    store) replayed to the same position. Raises `GraphKeptMoving` when no
    snapshot of the live graph was taken at one position in `tries`."""
    name = projection.name
    scratch.install()
    replayer = Projector(projection, scratch)  # type: ignore[arg-type]
    for _ in range(tries):
        at = graph.position(name)
        while replayer.position < at:
            events = [e for e in log.read(replayer.position, batch) if e.position <= at]
            if not events:
                break
            replayer.handle(events)
            if progress:
                progress(events[-1].position, at)
        live = graph.snapshot()
        if graph.position(name) == at:  # nothing committed while it was read (every commit moves the position)
            return Verification(name, at, compare_graphs(live, scratch.snapshot(), limit))
    raise GraphKeptMoving(f"{name} moved during each of {tries} snapshots: verify it when it is quieter")


class GraphKeptMoving(Exception):
    pass


def compare_graphs(live: GraphSnapshot, rebuilt: GraphSnapshot, limit: int = 1000) -> list[Difference]:
    """Per kind of node or relationship (users, communities, members,
    follows, blocks, posts, likes): what only one side has, and nodes whose
    properties differ."""
    out: list[Difference] = []
    a, b = asdict(live), asdict(rebuilt)
    for kind in a:
        found: list[Difference] = []
        here, there = a[kind], b[kind]
        for key in sorted(set(there) - set(here), key=str):
            found.append(Difference(kind, _key(key), "missing", None, _props(kind, there, key)))
        for key in sorted(set(here) - set(there), key=str):
            found.append(Difference(kind, _key(key), "extra", _props(kind, here, key), None))
        if isinstance(here, dict):
            for key in sorted(set(here) & set(there), key=str):
                if here[key] != there[key]:
                    l, r = _props(kind, here, key), _props(kind, there, key)
                    assert l is not None and r is not None
                    found.append(Difference(kind, _key(key), "differs", l, r, tuple(c for c in l if l[c] != r[c])))
        out += found[:limit]
    return out


def _key(key: Any) -> str:
    return ":".join(key) if isinstance(key, tuple) else str(key)


def _props(kind: str, side: Any, key: Any) -> dict[str, Any] | None:
    if not isinstance(side, dict):
        return None
    value = side[key]
    return dict(zip(POST_FIELDS, value)) if kind == "posts" else {"public": value}
