"""Crashes and redeliveries never change the feed graph: random changes,
applied in random batches of which some crash midway and are retried
(redelivering earlier positions too, skipped by comparing with `tx.position`
as the projector does), leave the same graph and feeds as applying them all in
one go. On SQLite and on Neo4j."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.graph import ORDERS, FeedGraph, GraphTx
from adapters.graph_neo4j import Neo4jFeedGraph
from adapters.graph_sql import SQLiteFeedGraph

USERS = [f"u{i}" for i in range(5)]
COMMUNITIES = [f"c{i}" for i in range(3)]
POSTS = [f"p{i}" for i in range(6)]
T0 = 1_750_000_000.0

Call = tuple[Any, ...]
Change = tuple[int, Call]  # (position, call)

users, communities, posts, active = (st.sampled_from(USERS), st.sampled_from(COMMUNITIES), st.sampled_from(POSTS),
                                     st.booleans())
calls = st.one_of(
    st.tuples(st.just("user"), users),
    st.tuples(st.just("community"), communities, active),
    st.tuples(st.just("membership"), communities, users, active),
    st.tuples(st.just("follow"), users, users, active),
    st.tuples(st.just("block"), users, users, active),
    st.tuples(st.just("post"), posts, users, communities, st.integers(0, 5).map(lambda h: T0 + 3600.0 * h)),
    st.tuples(st.just("remove_post"), posts),
    st.tuples(st.just("like"), users, posts, active),
)


@st.composite
def changes(draw: st.DrawFn) -> list[Change]:
    """Calls at increasing positions, with gaps (events the graph ignores)."""
    out, position = [], 0
    for call in draw(st.lists(calls, min_size=1, max_size=40)):
        position += draw(st.integers(1, 3))
        out.append((position, call))
    return out


class Crash(Exception):
    pass


def apply_batch(tx: GraphTx, batch: Sequence[Change], crash_after: int | None = None) -> None:
    """As `projections.projector.apply_batch`: changes at or below the
    transaction's position were applied before and are skipped."""
    last = tx.position
    for n, (position, (method, *args)) in enumerate(batch):
        if n == crash_after:
            raise Crash
        if position <= last:
            continue
        getattr(tx, method)(*args)
        last = position
    if crash_after is not None:
        raise Crash  # after the last call, before the commit
    if last != tx.position:
        tx.set_position(last)


def state(graph: FeedGraph) -> tuple[Any, ...]:
    """Everything a user could notice: the graph, every feed page by page, the suggestions."""
    feeds = []
    for user in USERS:
        for order in ORDERS:
            after, more = None, True
            while more:
                page = graph.feed(user, first=2, after=after, order=order)
                feeds.append((user, order, [(i.post_id, i.likes) for i in page.items]))
                after, more = page.end_cursor, page.has_next
        feeds.append((user, graph.suggested_communities(user), graph.suggested_people(user)))
    return graph.snapshot(), feeds


@pytest.fixture(scope="module", params=["sqlite", "neo4j"])
def open_graph(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """A context manager factory: a new, empty graph each time, removed after."""
    if request.param == "neo4j":
        uri = request.getfixturevalue("neo4j_uri")

        @contextmanager
        def neo4j_graph() -> Iterator[FeedGraph]:
            g = Neo4jFeedGraph(uri, namespace=f"t{uuid.uuid4().hex[:10]}")
            g.install()
            try:
                yield g
            finally:
                g.drop()
                g.close()

        return neo4j_graph

    @contextmanager
    def sqlite_graph() -> Iterator[FeedGraph]:
        with tempfile.TemporaryDirectory() as d:
            g = SQLiteFeedGraph(Path(d) / "graph.sqlite3")
            g.install()
            try:
                yield g
            finally:
                g.close()

    return sqlite_graph


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=changes(), data=st.data())
def test_crashes_and_redeliveries_leave_the_graph_of_one_clean_pass(
        open_graph: Callable[[], Any], seq: list[Change], data: st.DataObject) -> None:
    with open_graph() as reference, open_graph() as graph:
        with reference.transaction("feed") as tx:
            apply_batch(tx, seq)

        at = 0
        while at < len(seq):
            size = data.draw(st.integers(1, 8), label="batch size")
            redelivered = data.draw(st.integers(0, 3), label="earlier changes redelivered")
            batch = seq[max(0, at - redelivered):at + size]
            if data.draw(st.booleans(), label="crash"):
                with pytest.raises(Crash):
                    with graph.transaction("feed") as tx:
                        apply_batch(tx, batch, crash_after=data.draw(st.integers(0, len(batch)), label="after"))
            with graph.transaction("feed") as tx:
                apply_batch(tx, batch)
            at += size

        assert graph.position("feed") == reference.position("feed") == seq[-1][0]
        assert state(graph) == state(reference)

