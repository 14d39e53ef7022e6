"""Contract of the feed graph (adapters/graph.py), against SQLite and Neo4j:
what a user notices in the home feed and the suggestions, and the
transaction, replay and rebuild behaviour projections rely on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.errors import ServiceUnavailable
from adapters.graph import MAX_PAGE, FeedGraph, GraphSnapshot, GraphTx, Order, Suggestion, encode_cursor, top_score
from adapters.graph_neo4j import Neo4jFeedGraph
from adapters.graph_sql import SQLiteFeedGraph

Call = tuple[Any, ...]  # ("follow", "me", "alice", True): a GraphTx method and its arguments
HOUR = 3600.0
T0 = 1_750_000_000.0


@pytest.fixture(params=["sqlite", "neo4j"])
def open_graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], FeedGraph]]:
    """Opens an adapter instance on the test's graph (each call a new instance
    on the same data: a fresh SQLite file, or a random Neo4j namespace)."""
    opened: list[FeedGraph] = []
    if request.param == "neo4j":
        uri, ns = request.getfixturevalue("neo4j_uri"), f"t{uuid.uuid4().hex[:10]}"
        make: Callable[[], FeedGraph] = lambda: Neo4jFeedGraph(uri, namespace=ns)  # noqa: E731
    else:
        make = lambda: SQLiteFeedGraph(tmp_path / "graph.sqlite3")  # noqa: E731

    def open_() -> FeedGraph:
        g = make()
        g.install()
        opened.append(g)
        return g

    yield open_
    if opened and isinstance(opened[0], Neo4jFeedGraph):
        opened[0].drop()
    for g in opened:
        g.close()


@pytest.fixture
def graph(open_graph: Callable[[], FeedGraph]) -> FeedGraph:
    return open_graph()


def apply(graph: FeedGraph, *calls: Call, name: str = "feed", position: int | None = None) -> None:
    with graph.transaction(name) as tx:
        run(tx, calls)
        if position is not None:
            tx.set_position(position)


def run(tx: GraphTx, calls: tuple[Call, ...] | list[Call]) -> None:
    for method, *args in calls:
        getattr(tx, method)(*args)


def feed_ids(graph: FeedGraph, user: str, order: Order = "new", first: int = MAX_PAGE) -> list[str]:
    """Every post of `user`'s feed, page after page."""
    out: list[str] = []
    after = None
    while True:
        page = graph.feed(user, first=first, after=after, order=order)
        out += [i.post_id for i in page.items]
        if not page.has_next:
            return out
        after = page.end_cursor


WORLD: tuple[Call, ...] = (
    *(("user", u) for u in ("me", "alice", "bob", "carol", "dave")),
    ("community", "hikers", True), ("community", "secret", False), ("community", "chess", True),
    ("membership", "hikers", "me", True), ("follow", "me", "alice", True),
    ("post", "alice-chess", "alice", "chess", T0 + 1),  # followed author, public community
    ("post", "alice-secret", "alice", "secret", T0 + 2),  # followed author, private community: hidden
    ("post", "bob-hikers", "bob", "hikers", T0 + 3),  # my community
    ("post", "carol-chess", "carol", "chess", T0 + 4),  # neither
    ("post", "alice-hikers", "alice", "hikers", T0 + 5),  # both ways: once
)


def test_feed_has_followed_authors_and_my_communities_once(graph: FeedGraph) -> None:
    apply(graph, *WORLD)
    assert feed_ids(graph, "me") == ["alice-hikers", "bob-hikers", "alice-chess"]
    assert feed_ids(graph, "carol") == []
    assert graph.feed("nobody").items == []


def test_feed_items_carry_the_post(graph: FeedGraph) -> None:
    apply(graph, *WORLD, ("like", "bob", "bob-hikers", True))
    item = next(i for i in graph.feed("me").items if i.post_id == "bob-hikers")
    assert (item.author_id, item.community_id, item.created_at, item.likes) == ("bob", "hikers", T0 + 3, 1)
    assert item.score == pytest.approx(top_score(1, T0 + 3), rel=1e-12)


def test_private_community_posts_reach_members_only(graph: FeedGraph) -> None:
    apply(graph, *WORLD)
    assert "alice-secret" not in feed_ids(graph, "me")  # following the author is not enough
    apply(graph, ("membership", "secret", "me", True))
    assert "alice-secret" in feed_ids(graph, "me")
    apply(graph, ("community", "hikers", False))  # a community turning private keeps its members' feed
    assert "bob-hikers" in feed_ids(graph, "me")
    apply(graph, ("community", "chess", False))
    assert "alice-chess" not in feed_ids(graph, "me")


def test_blocked_either_way_never_show(graph: FeedGraph) -> None:
    apply(graph, *WORLD, ("block", "me", "bob", True), ("block", "alice", "me", True))
    assert feed_ids(graph, "me") == []
    apply(graph, ("membership", "hikers", "bob", True))
    assert "alice-hikers" in feed_ids(graph, "bob")  # a block hides only between the two
    apply(graph, ("block", "me", "bob", False), ("block", "alice", "me", False))
    assert feed_ids(graph, "me") == ["alice-hikers", "bob-hikers", "alice-chess"]


def test_removed_posts_never_show(graph: FeedGraph) -> None:
    apply(graph, *WORLD, ("remove_post", "bob-hikers"))
    assert feed_ids(graph, "me") == ["alice-hikers", "alice-chess"]
    apply(graph, ("post", "bob-hikers", "bob", "hikers", T0 + 3), ("like", "me", "bob-hikers", True))
    assert "bob-hikers" not in feed_ids(graph, "me")  # a replayed publication does not bring it back
    assert "bob-hikers" not in feed_ids(graph, "me", order="top")


def test_leaving_a_community_removes_its_posts_but_followed_public_ones(graph: FeedGraph) -> None:
    apply(graph, *WORLD, ("membership", "secret", "me", True))
    assert feed_ids(graph, "me") == ["alice-hikers", "bob-hikers", "alice-secret", "alice-chess"]
    apply(graph, ("membership", "hikers", "me", False), ("membership", "secret", "me", False))
    # alice is followed: her post in public hikers stays; bob's goes; her private one goes
    assert feed_ids(graph, "me") == ["alice-hikers", "alice-chess"]


def test_new_order_is_newest_first_then_post_id(graph: FeedGraph) -> None:
    apply(graph, ("community", "c", True), ("membership", "c", "me", True),
          ("post", "a", "x", "c", T0), ("post", "b", "x", "c", T0 + 10), ("post", "c", "y", "c", T0 + 10),
          ("post", "d", "y", "c", T0 - 10))
    assert feed_ids(graph, "me") == ["c", "b", "a", "d"]


def test_top_order_weighs_likes_against_recency(graph: FeedGraph) -> None:
    likers = [f"fan{i}" for i in range(10)]
    apply(graph, ("community", "c", True), ("membership", "c", "me", True),
          ("post", "liked", "x", "c", T0),  # ten likes: worth 12.5 hours
          ("post", "newer", "x", "c", T0 + 2 * HOUR),  # slightly newer, no likes
          ("post", "much-newer", "x", "c", T0 + 30 * HOUR),  # far newer, no likes
          ("post", "few-likes", "x", "c", T0 + HOUR),  # two likes (3.8 h) beat one hour newer
          *(("like", u, "liked", True) for u in likers), ("like", "fan0", "few-likes", True),
          ("like", "fan1", "few-likes", True))
    assert feed_ids(graph, "me", order="top") == ["much-newer", "liked", "few-likes", "newer"]
    assert feed_ids(graph, "me", order="new") == ["much-newer", "newer", "few-likes", "liked"]
    # unliking moves it back down
    apply(graph, *(("like", u, "liked", False) for u in likers))
    assert feed_ids(graph, "me", order="top") == ["much-newer", "few-likes", "newer", "liked"]


@pytest.mark.parametrize("order", ["new", "top"])
def test_pages_give_every_visible_post_once(graph: FeedGraph, order: Order) -> None:
    apply(graph, *WORLD, ("community", "busy", True), ("membership", "busy", "me", True),
          *(("post", f"p{i:02}", f"u{i % 4}", "busy", T0 + (i // 3) * 60) for i in range(23)),  # ties in time
          *(("like", f"u{j}", f"p{i:02}", True) for i in range(0, 23, 5) for j in range(i % 4 + 1)),
          ("remove_post", "p07"), ("block", "me", "u3", True))
    everything = feed_ids(graph, "me", order=order)
    expected = {f"p{i:02}" for i in range(23) if i != 7 and i % 4 != 3} | {"alice-hikers", "bob-hikers",
                                                                           "alice-chess"}
    assert sorted(everything) == sorted(expected)
    for first in (1, 2, 5):
        assert feed_ids(graph, "me", order=order, first=first) == everything
    page = graph.feed("me", first=len(everything), order=order)
    assert not page.has_next and page.end_cursor == encode_cursor(order, page.items[-1])


@pytest.mark.parametrize("order", ["new", "top"])
def test_pages_stay_stable_when_posts_arrive(graph: FeedGraph, order: Order) -> None:
    apply(graph, ("community", "c", True), ("membership", "c", "me", True),
          *(("post", f"p{i}", "x", "c", T0 + i) for i in range(10)))
    first = graph.feed("me", first=4, order=order)
    apply(graph, *(("post", f"new{i}", "x", "c", T0 + 100 + i) for i in range(5)))  # newer: before page 1
    rest: list[str] = []
    after, more = first.end_cursor, first.has_next
    while more:
        page = graph.feed("me", first=4, after=after, order=order)
        rest += [i.post_id for i in page.items]
        after, more = page.end_cursor, page.has_next
    assert [i.post_id for i in first.items] + rest == [f"p{i}" for i in range(9, -1, -1)]


def test_bad_requests_raise_value_error(graph: FeedGraph) -> None:
    apply(graph, ("community", "c", True), ("membership", "c", "me", True), ("post", "p", "x", "c", T0),
          ("post", "q", "x", "c", T0 + 1))
    new_cursor = graph.feed("me", first=1).end_cursor
    for bad in ("garbage", "", "eyJ4Ijog", new_cursor):
        with pytest.raises(ValueError):
            graph.feed("me", after=bad, order="top")
    for first in (0, -1, MAX_PAGE + 1):
        with pytest.raises(ValueError):
            graph.feed("me", first=first)
    with pytest.raises(ValueError):
        graph.feed("me", order="hot")  # type: ignore[arg-type]


def test_likes_are_idempotent(graph: FeedGraph) -> None:
    apply(graph, *WORLD)
    apply(graph, ("like", "me", "bob-hikers", True), ("like", "me", "bob-hikers", True))
    apply(graph, ("like", "me", "bob-hikers", True))
    assert graph.snapshot().posts["bob-hikers"][3] == 1
    apply(graph, ("like", "me", "bob-hikers", False), ("like", "me", "bob-hikers", False))
    apply(graph, ("like", "me", "bob-hikers", False), ("like", "carol", "bob-hikers", False))
    assert graph.snapshot().posts["bob-hikers"][3] == 0
    apply(graph, ("like", "me", "bob-hikers", True), ("like", "me", "bob-hikers", False),
          ("like", "me", "bob-hikers", True), ("like", "carol", "bob-hikers", True))
    snap = graph.snapshot()
    assert snap.posts["bob-hikers"][3] == 2 and {("me", "bob-hikers"), ("carol", "bob-hikers")} <= snap.likes
    apply(graph, ("like", "me", "no-such-post", True))  # a like of an unknown post is dropped
    assert "no-such-post" not in graph.snapshot().posts


def test_calls_take_effect_in_order(graph: FeedGraph) -> None:
    apply(graph, ("follow", "me", "alice", True), ("follow", "me", "alice", False), ("follow", "me", "bob", False),
          ("follow", "me", "bob", True), ("community", "c", True), ("community", "c", False),
          ("membership", "c", "me", True), ("membership", "c", "me", False), ("membership", "c", "me", True))
    snap = graph.snapshot()
    assert snap.follows == {("me", "bob")} and snap.communities == {"c": False} and snap.members == {("c", "me")}


def test_replaying_the_same_calls_changes_nothing(graph: FeedGraph) -> None:
    calls = (*WORLD, ("like", "me", "bob-hikers", True), ("remove_post", "carol-chess"),
             ("block", "carol", "me", True), ("membership", "secret", "bob", True),
             ("follow", "me", "bob", True), ("follow", "me", "bob", False))
    apply(graph, *calls)
    before = graph.snapshot(), feed_ids(graph, "me"), feed_ids(graph, "me", order="top")
    apply(graph, *calls)
    apply(graph, *calls[len(calls) // 2:])  # a redelivered tail
    assert (graph.snapshot(), feed_ids(graph, "me"), feed_ids(graph, "me", order="top")) == before


def test_a_failing_transaction_rolls_back_changes_and_position(graph: FeedGraph) -> None:
    apply(graph, *WORLD, position=3)
    before = graph.snapshot()
    with pytest.raises(RuntimeError):
        with graph.transaction("feed") as tx:
            assert tx.position == 3
            run(tx, [("follow", "me", "carol", True), ("remove_post", "bob-hikers"), ("user", "zed"),
                     ("like", "me", "alice-chess", True)])
            tx.set_position(9)
            raise RuntimeError("crash mid-batch")
    assert graph.position("feed") == 3
    assert graph.snapshot() == before


@pytest.mark.parametrize("kind", ["sqlite", "neo4j"])
def test_a_graph_not_made_yet_is_at_position_zero(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What `rebuild --all` asks first, before anything was projected."""
    graph = (SQLiteFeedGraph(tmp_path / "graph.sqlite3") if kind == "sqlite" else
             Neo4jFeedGraph(request.getfixturevalue("neo4j_uri"), namespace=f"t{uuid.uuid4().hex[:10]}"))
    try:
        assert graph.position("feed_graph") == 0
    finally:
        graph.close()


def test_positions_are_per_name(graph: FeedGraph) -> None:
    assert graph.position("feed") == 0
    apply(graph, ("user", "a"), name="feed", position=4)
    apply(graph, ("user", "b"), name="other", position=9)
    apply(graph, ("user", "c"), name="feed")  # no new position: it stays
    assert (graph.position("feed"), graph.position("other"), graph.position("never")) == (4, 9, 0)
    with graph.transaction("feed") as tx:
        assert tx.position == 4


def test_transactions_of_one_projection_serialize(graph: FeedGraph) -> None:
    entered, seen = threading.Event(), []

    def second() -> None:
        entered.wait()
        with graph.transaction("feed") as tx:
            seen.append(tx.position)

    t = threading.Thread(target=second)
    t.start()
    with graph.transaction("feed") as tx:
        tx.user("a")
        tx.set_position(1)
        entered.set()
        time.sleep(0.3)  # the second one waits for this commit
    t.join(10)
    assert seen == [1]


def test_suggested_communities_count_the_people_i_follow(graph: FeedGraph) -> None:
    apply(graph, *(("community", c, True) for c in ("hikers", "chess", "art", "poker", "zoo", "gone")),
          ("community", "secret", False), ("membership", "secret", "a", True), ("membership", "secret", "b", True),
          ("membership", "secret", "c", True),  # who belongs to a private community is not suggested around
          *(("follow", "me", f, True) for f in ("a", "b", "c")), ("follow", "x", "d", True),
          ("membership", "hikers", "a", True), ("membership", "hikers", "b", True),
          ("membership", "chess", "c", True), ("membership", "art", "a", True), ("membership", "art", "me", True),
          ("membership", "poker", "d", True), ("membership", "zoo", "b", True), ("membership", "zoo", "c", True),
          ("membership", "chess", "x", True), ("membership", "gone", "a", True), ("membership", "gone", "a", False))
    assert graph.suggested_communities("me") == [Suggestion("hikers", 2), Suggestion("zoo", 2),
                                                 Suggestion("chess", 1)]
    assert graph.suggested_communities("me", limit=1) == [Suggestion("hikers", 2)]
    assert graph.suggested_communities("nobody") == []


def test_suggested_people_count_and_exclusions(graph: FeedGraph) -> None:
    apply(graph, *(("follow", "me", f, True) for f in ("a", "b", "c")),
          ("follow", "a", "x", True), ("follow", "b", "x", True), ("follow", "c", "x", True),
          ("follow", "a", "y", True), ("follow", "b", "y", True), ("follow", "a", "z", True),
          ("follow", "a", "me", True),  # not me
          ("follow", "a", "b", True),  # already followed
          ("follow", "a", "blocked", True), ("block", "me", "blocked", True),
          ("follow", "b", "blocker", True), ("block", "blocker", "me", True),
          ("follow", "x", "far", True))  # two hops from someone I do not follow
    assert graph.suggested_people("me") == [Suggestion("x", 3), Suggestion("y", 2), Suggestion("z", 1)]
    assert graph.suggested_people("me", limit=2) == [Suggestion("x", 3), Suggestion("y", 2)]
    apply(graph, ("follow", "me", "x", True))
    assert [s.id for s in graph.suggested_people("me")] == ["y", "far", "z"]


def test_rebuild_empties_resumes_and_swaps(graph: FeedGraph) -> None:
    apply(graph, *WORLD, position=40)
    assert graph.start_rebuild("feed", fresh=True) == 0
    assert graph.position("feed") == 0 and graph.snapshot() == GraphSnapshot()
    with graph.transaction("feed", scratch=True) as tx:
        run(tx, WORLD[:8])
        tx.set_position(20)
    # an interrupted rebuild resumes where it stopped
    assert graph.start_rebuild("feed") == 20
    with graph.transaction("feed", scratch=True) as tx:
        assert tx.position == 20
        run(tx, WORLD[8:])
        tx.set_position(40)
    calls: list[tuple[int, int]] = []
    assert graph.swap("feed", (), lambda tx, frm, to: calls.append((frm, to))) == 40
    assert graph.position("feed") == 40
    assert feed_ids(graph, "me") == ["alice-hikers", "bob-hikers", "alice-chess"]
    # once swapped, a rebuild starts afresh even when not asked to
    assert graph.start_rebuild("feed") == 0 and graph.snapshot().posts == {}


def test_a_live_transaction_waits_while_a_rebuild_runs_and_loses_nothing(graph: FeedGraph) -> None:
    apply(graph, *WORLD[:8], position=8)
    graph.start_rebuild("feed", fresh=True)
    seen: list[int] = []

    def live() -> None:  # a projector that took events 9.. meanwhile
        with graph.transaction("feed") as tx:
            seen.append(tx.position)
            if tx.position < 12:
                run(tx, WORLD[8:])
                tx.set_position(12)
    t = threading.Thread(target=live)
    t.start()
    time.sleep(0.3)
    assert seen == []  # waiting for the rebuild
    with graph.transaction("feed", scratch=True) as tx:
        run(tx, WORLD[:8])
        tx.set_position(8)
    graph.swap("feed", (), lambda tx, frm, to: None)
    t.join(10)
    assert seen == [8] and graph.position("feed") == 12
    assert feed_ids(graph, "me") == ["alice-hikers", "bob-hikers", "alice-chess"]


def test_a_second_instance_sees_committed_data(open_graph: Callable[[], FeedGraph]) -> None:
    one = open_graph()
    apply(one, *WORLD, position=7)
    two = open_graph()
    assert two.position("feed") == 7
    assert feed_ids(two, "me") == ["alice-hikers", "bob-hikers", "alice-chess"]
    assert two.snapshot() == one.snapshot()


def test_ping(graph: FeedGraph) -> None:
    graph.ping()


def test_unreachable_neo4j_names_the_setting() -> None:
    graph = Neo4jFeedGraph("bolt://127.0.0.1:1")  # connects on first use
    with pytest.raises(ServiceUnavailable) as e:
        graph.feed("me")
    assert e.value.service == "Neo4j" and e.value.setting == "ATTENDWISE_NEO4J_URI"
    assert "ATTENDWISE_NEO4J_URI" in str(e.value) and "bolt://127.0.0.1:1" in str(e.value)


def test_an_unusable_sqlite_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(ServiceUnavailable) as e:
        SQLiteFeedGraph(tmp_path / "not-a-folder" / "graph.sqlite3")
    assert e.value.service == "SQLite" and e.value.setting == "ATTENDWISE_DATA_DIR"
