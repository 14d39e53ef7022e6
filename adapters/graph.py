"""The social graph behind the home feed and suggestions.

Port `FeedGraph` (contract below). Adapters: `graph_neo4j.Neo4jFeedGraph`
(full mode, Bolt) and `graph_sql.SQLiteFeedGraph` (the embedded default: SQL
on the embedded database). Both pass tests/contract/test_feed_graph.py.

The graph is a projection: `projections/feed_graph.py` turns events into the
`GraphTx` calls below. A store is driven by the same `Projector` as the
read-model stores (`transaction(name)` / `position(name)` / `install`), so
catching up, following the bus and rebuilding work the same way.

Every write is idempotent on event-derived keys (ids of users, communities,
posts), and the projection's position is written in the same transaction as
the changes: a crash replays nothing twice, and a replay of a change applied
before changes nothing.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Order = Literal["new", "top"]
ORDERS = ("new", "top")
MAX_PAGE = 100


def top_score(likes: int, created_at: float) -> float:
    """"Top" ordering: recency with decay plus likes. Each tenfold of likes is
    worth 12.5 hours of recency (the ranking Reddit published), and the score
    does not depend on the time of the query, so pages stay stable."""
    return math.log10(max(likes, 1)) + created_at / 45000.0


@dataclass(frozen=True)
class FeedItem:
    post_id: str
    author_id: str
    community_id: str
    created_at: float  # seconds since the epoch, UTC
    likes: int
    score: float  # `top_score(likes, created_at)`


@dataclass(frozen=True)
class FeedPage:
    items: list[FeedItem]
    end_cursor: str | None  # pass as `after` for the next page; None when empty
    has_next: bool


@dataclass(frozen=True)
class Suggestion:
    id: str  # a community id or a user id
    count: int  # how many of the people I follow lead there


def encode_cursor(order: Order, item: FeedItem) -> str:
    key = [item.created_at, item.post_id] if order == "new" else [item.score, item.post_id]
    return base64.urlsafe_b64encode(json.dumps([order, *key]).encode()).decode().rstrip("=")


def decode_cursor(order: Order, cursor: str | None) -> tuple[float, str] | None:
    """(sort value, post id) of the last item seen, or None for the first page.
    Raises ValueError for a cursor this order did not make."""
    if cursor is None:
        return None
    try:
        o, value, post_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if o != order or not isinstance(post_id, str):
            raise ValueError
        return float(value), post_id
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ValueError("this cursor was not made by this feed ordering") from e


@dataclass
class GraphSnapshot:
    """The whole graph as plain sets, to compare two graphs (a live one and a
    rebuild) in tests."""

    users: set[str] = field(default_factory=set)
    communities: dict[str, bool] = field(default_factory=dict)  # id -> public
    members: set[tuple[str, str]] = field(default_factory=set)  # (community, user)
    follows: set[tuple[str, str]] = field(default_factory=set)  # (follower, followee)
    blocks: set[tuple[str, str]] = field(default_factory=set)  # (blocker, blocked)
    posts: dict[str, tuple[str, str, float, int, bool]] = field(default_factory=dict)
    # post id -> (author, community, created_at, likes, removed)
    likes: set[tuple[str, str]] = field(default_factory=set)  # (user, post)


# ---------------------------------------------------------------- shared by the adapters
Row = tuple[Any, ...]
REBUILD_WAIT = 0.5  # seconds a live transaction waits, and tries again, while a rebuild runs
KEY_FIELDS = {"user": 1, "community": 1, "member+": 2, "member-": 2, "follow+": 2, "follow-": 2, "block+": 2,
              "block-": 2, "post": 1, "remove": 1, "like+": 2, "like-": 2}


class ChangeBuffer:
    """A `GraphTx` that records the calls, to be flushed at commit as runs of
    one kind (an `active` flag is part of the kind, so follow and unfollow
    are different kinds and keep their order)."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.new_position: int | None = None
        self.changes: list[tuple[str, Row]] = []

    def set_position(self, position: int) -> None:
        self.new_position = position

    def user(self, user_id: str) -> None:
        self.changes.append(("user", (user_id,)))

    def community(self, community_id: str, public: bool) -> None:
        self.changes.append(("community", (community_id, bool(public))))

    def membership(self, community_id: str, user_id: str, active: bool) -> None:
        self.changes.append(("member+" if active else "member-", (community_id, user_id)))

    def follow(self, follower_id: str, followee_id: str, active: bool) -> None:
        self.changes.append(("follow+" if active else "follow-", (follower_id, followee_id)))

    def block(self, blocker_id: str, blocked_id: str, active: bool) -> None:
        self.changes.append(("block+" if active else "block-", (blocker_id, blocked_id)))

    def post(self, post_id: str, author_id: str, community_id: str, created_at: float) -> None:
        self.changes.append(("post", (post_id, author_id, community_id, float(created_at))))

    def remove_post(self, post_id: str) -> None:
        self.changes.append(("remove", (post_id,)))

    def like(self, user_id: str, post_id: str, active: bool) -> None:
        self.changes.append(("like+" if active else "like-", (user_id, post_id)))

    def runs(self) -> Iterator[tuple[str, list[Row]]]:
        """The buffered changes as (kind, rows), one per run of one kind, and
        empties the buffer. Rows are unique per key within a run: the first
        post of an id wins (later ones change nothing), otherwise the last
        (a community's visibility); every other call repeated is a no-op."""
        changes, self.changes = self.changes, []
        i = 0
        while i < len(changes):
            kind, j = changes[i][0], i
            rows: dict[Row, Row] = {}
            while j < len(changes) and changes[j][0] == kind:
                row = changes[j][1]
                key = row[:KEY_FIELDS[kind]]
                if kind == "post":
                    rows.setdefault(key, row)
                else:
                    rows[key] = row
                j += 1
            yield kind, list(rows.values())
            i = j


def check_page(first: int, order: Order, after: str | None) -> tuple[float, str] | None:
    """Validates a feed request; returns the decoded cursor."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    if not 1 <= first <= MAX_PAGE:
        raise ValueError(f"first must be between 1 and {MAX_PAGE}")
    return decode_cursor(order, after)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")


def make_page(order: Order, items: list[FeedItem], first: int) -> FeedPage:
    """`items` fetched with limit first + 1: the extra one only says there is more."""
    page = items[:first]
    return FeedPage(page, encode_cursor(order, page[-1]) if page else None, len(items) > first)


# ---------------------------------------------------------------- SQLite

class GraphTx(Protocol):
    """One atomic unit of graph work; the changes and the new position commit
    together or not at all. Each call is idempotent: applying it twice leaves
    the graph as applying it once. Calls take effect in the order made."""

    position: int  # the projection's position when the transaction began

    def set_position(self, position: int) -> None: ...

    def user(self, user_id: str) -> None:
        """A user exists (registered)."""

    def community(self, community_id: str, public: bool) -> None:
        """A community exists, or its visibility changed."""

    def membership(self, community_id: str, user_id: str, active: bool) -> None:
        """`user` is (active) or is no longer (left, banned) a member."""

    def follow(self, follower_id: str, followee_id: str, active: bool) -> None: ...

    def block(self, blocker_id: str, blocked_id: str, active: bool) -> None: ...

    def post(self, post_id: str, author_id: str, community_id: str, created_at: float) -> None:
        """A post was published in a community (users and community exist)."""

    def remove_post(self, post_id: str) -> None:
        """A post was deleted: it never shows again (its node may stay as a tombstone)."""

    def like(self, user_id: str, post_id: str, active: bool) -> None:
        """Liking twice is one like; unliking what is not liked changes nothing."""


class FeedGraph(Protocol):
    """The port. Feed rules, the same for every adapter:

    `feed(me)`: posts, not removed, whose author `me` follows or whose
    community `me` is an active member of; and only if the community is public
    or `me` is a member; and never by an author `me` blocked or who blocked
    `me`. Order "new": created_at, then post id, both descending. Order "top":
    `top_score`, then post id, both descending. `after` is the `end_cursor` of
    the previous page (keyset pagination: posts arriving meanwhile never shift
    or repeat items on later pages; in "top", a post whose likes change while
    someone pages may move across the page boundary).

    `suggested_communities(me)`: public communities that people `me` follows
    are active members of, where `me` is not (who belongs to a private
    community is not shown to outsiders); count = how many of them; order
    count descending then id. `suggested_people(me)`: users followed by people
    `me` follows, not `me`, not already followed, not blocked either way;
    count = how many of the people `me` follows follow them; same order.
    """

    def install(self, tables: Sequence[Any] = ()) -> None:
        """Create constraints and indexes (idempotent; run at start)."""

    @contextmanager
    def transaction(self, name: str, scratch: bool = False) -> Iterator[GraphTx]: ...

    def position(self, name: str) -> int: ...

    def feed(self, user_id: str, first: int = 20, after: str | None = None, order: Order = "new") -> FeedPage: ...

    def suggested_communities(self, user_id: str, limit: int = 10) -> list[Suggestion]: ...

    def suggested_people(self, user_id: str, limit: int = 10) -> list[Suggestion]: ...

    def snapshot(self) -> GraphSnapshot: ...

    # rebuild: the graph has no scratch copy; `start_rebuild` empties it (or,
    # unless `fresh`, resumes an interrupted rebuild) and `swap` finishes it.
    # Meanwhile live (non-scratch) transactions wait: a live projector
    # resumes from the rebuilt position, so no event is lost or applied twice.
    def start_rebuild(self, name: str, tables: Sequence[Any] = (), fresh: bool = False) -> int: ...

    def swap(self, name: str, tables: Sequence[Any], catch_up: Callable[[Any, int, int], None]) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...
