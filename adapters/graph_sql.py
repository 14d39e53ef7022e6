"""The social graph on SQLite: the embedded default adapter of `FeedGraph`
(contract in adapters/graph.py, tested by tests/contract/test_feed_graph.py).

Tables prefixed `g_` in one WAL-mode file, one connection per thread. A
transaction is `BEGIN IMMEDIATE` (one writer at a time, so two transactions
of one projection never interleave): it reads the position, buffers the
`GraphTx` calls and, on leaving the block, flushes them in order (a run of
like calls is one `executemany`) and writes the new position before COMMIT.

Also home of `ChangeBuffer` and the paging helpers both adapters share.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from adapters.errors import ServiceUnavailable
from adapters.sql import sqlite_transaction
from adapters.graph import (REBUILD_WAIT, ChangeBuffer, FeedItem, FeedPage, GraphSnapshot, Order, Row, Suggestion,
                            check_limit, check_page, make_page, top_score)

log = structlog.get_logger("feed_graph")
# a change's kind -> how many leading fields of its row are its key
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS g_users (id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS g_communities (id TEXT PRIMARY KEY, public INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS g_members (user_id TEXT NOT NULL, community_id TEXT NOT NULL, "
    "PRIMARY KEY (user_id, community_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS g_follows (follower_id TEXT NOT NULL, followee_id TEXT NOT NULL, "
    "PRIMARY KEY (follower_id, followee_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS g_blocks (blocker_id TEXT NOT NULL, blocked_id TEXT NOT NULL, "
    "PRIMARY KEY (blocker_id, blocked_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS g_blocks_blocked_ix ON g_blocks (blocked_id, blocker_id)",
    "CREATE TABLE IF NOT EXISTS g_posts (id TEXT PRIMARY KEY, author_id TEXT NOT NULL, community_id TEXT NOT NULL, "
    "created_at REAL NOT NULL, likes INTEGER NOT NULL, removed INTEGER NOT NULL, score REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS g_posts_author_ix ON g_posts (author_id, created_at)",
    "CREATE INDEX IF NOT EXISTS g_posts_community_ix ON g_posts (community_id, created_at)",
    "CREATE TABLE IF NOT EXISTS g_likes (user_id TEXT NOT NULL, post_id TEXT NOT NULL, "
    "PRIMARY KEY (user_id, post_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS g_likes_post_ix ON g_likes (post_id)",
    "CREATE TABLE IF NOT EXISTS g_positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL, "
    "rebuilding INTEGER NOT NULL DEFAULT 0)",
)
GRAPH_TABLES = ("g_users", "g_communities", "g_members", "g_follows", "g_blocks", "g_posts", "g_likes")

_USER = "INSERT OR IGNORE INTO g_users (id) VALUES (?)"
_COMMUNITY = "INSERT OR IGNORE INTO g_communities (id, public) VALUES (?, 0)"  # private until told otherwise
_POST_EXISTS = "EXISTS (SELECT 1 FROM g_posts WHERE id = ?2)"
_RECOUNT = ("UPDATE g_posts SET likes = (SELECT count(*) FROM g_likes WHERE post_id = g_posts.id), "
            "score = top_score((SELECT count(*) FROM g_likes WHERE post_id = g_posts.id), created_at) WHERE id = ?")

# kind -> statements run (executemany) over the run's rows, each given the row's fields projected by `args`
WRITES: dict[str, list[tuple[str, Callable[[Row], Row]]]] = {
    "user": [(_USER, lambda r: r)],
    "community": [("INSERT INTO g_communities (id, public) VALUES (?, ?) "
                   "ON CONFLICT (id) DO UPDATE SET public = excluded.public", lambda r: r)],
    "member+": [(_COMMUNITY, lambda r: (r[0],)), (_USER, lambda r: (r[1],)),
                ("INSERT OR IGNORE INTO g_members (community_id, user_id) VALUES (?, ?)", lambda r: r)],
    "member-": [("DELETE FROM g_members WHERE community_id = ? AND user_id = ?", lambda r: r)],
    "follow+": [(_USER, lambda r: (r[0],)), (_USER, lambda r: (r[1],)),
                ("INSERT OR IGNORE INTO g_follows (follower_id, followee_id) VALUES (?, ?)", lambda r: r)],
    "follow-": [("DELETE FROM g_follows WHERE follower_id = ? AND followee_id = ?", lambda r: r)],
    "block+": [(_USER, lambda r: (r[0],)), (_USER, lambda r: (r[1],)),
               ("INSERT OR IGNORE INTO g_blocks (blocker_id, blocked_id) VALUES (?, ?)", lambda r: r)],
    "block-": [("DELETE FROM g_blocks WHERE blocker_id = ? AND blocked_id = ?", lambda r: r)],
    # the stored post decides its author and community (a repeated id changes nothing)
    "post": [("INSERT OR IGNORE INTO g_posts (id, author_id, community_id, created_at, likes, removed, score) "
              "VALUES (?1, ?2, ?3, ?4, 0, 0, top_score(0, ?4))", lambda r: r),
             ("INSERT OR IGNORE INTO g_users (id) SELECT author_id FROM g_posts WHERE id = ?", lambda r: (r[0],)),
             ("INSERT OR IGNORE INTO g_communities (id, public) SELECT community_id, 0 FROM g_posts WHERE id = ?",
              lambda r: (r[0],))],
    "remove": [("UPDATE g_posts SET removed = 1 WHERE id = ?", lambda r: r)],
    # likes of a post that does not exist are dropped; `likes` is the count of like rows
    "like+": [(f"INSERT OR IGNORE INTO g_users (id) SELECT ?1 WHERE {_POST_EXISTS}", lambda r: r),
              (f"INSERT OR IGNORE INTO g_likes (user_id, post_id) SELECT ?1, ?2 WHERE {_POST_EXISTS}", lambda r: r)],
    "like-": [("DELETE FROM g_likes WHERE user_id = ? AND post_id = ?", lambda r: r)],
}

# the posts of followed authors and of my communities (one multi-index OR
# over the author and community indexes), then the visibility rules
_FEED = """
WITH mine(community_id) AS (SELECT community_id FROM g_members WHERE user_id = :me),
blocked(user_id) AS (SELECT blocked_id FROM g_blocks WHERE blocker_id = :me
                     UNION SELECT blocker_id FROM g_blocks WHERE blocked_id = :me)
SELECT p.id, p.author_id, p.community_id, p.created_at, p.likes, p.score
FROM g_posts p JOIN g_communities c ON c.id = p.community_id
WHERE (p.author_id IN (SELECT followee_id FROM g_follows WHERE follower_id = :me) OR p.community_id IN mine)
  AND p.removed = 0 AND p.author_id NOT IN blocked AND (c.public OR p.community_id IN mine) {after}
ORDER BY p.{key} DESC, p.id DESC LIMIT :limit
"""
_AFTER = "AND (p.{key} < :value OR (p.{key} = :value AND p.id < :post))"
# (order, after a cursor?) -> query
FEEDS = {(order, paged): _FEED.replace("{after}", _AFTER if paged else "").replace("{key}", key)
         for order, key in (("new", "created_at"), ("top", "score")) for paged in (False, True)}

_SUGGESTED_COMMUNITIES = """
SELECT m.community_id, count(*) AS n FROM g_follows f JOIN g_members m ON m.user_id = f.followee_id
WHERE f.follower_id = :me AND m.community_id NOT IN (SELECT community_id FROM g_members WHERE user_id = :me)
  AND m.community_id IN (SELECT id FROM g_communities WHERE public = 1)
GROUP BY m.community_id ORDER BY n DESC, m.community_id LIMIT :limit
"""
_SUGGESTED_PEOPLE = """
SELECT f2.followee_id, count(*) AS n FROM g_follows f1 JOIN g_follows f2 ON f2.follower_id = f1.followee_id
WHERE f1.follower_id = :me AND f2.followee_id <> :me
  AND f2.followee_id NOT IN (SELECT followee_id FROM g_follows WHERE follower_id = :me)
  AND f2.followee_id NOT IN (SELECT blocked_id FROM g_blocks WHERE blocker_id = :me)
  AND f2.followee_id NOT IN (SELECT blocker_id FROM g_blocks WHERE blocked_id = :me)
GROUP BY f2.followee_id ORDER BY n DESC, f2.followee_id LIMIT :limit
"""
# sqlite error names that mean the file cannot be used now, not a bug in a statement
_UNAVAILABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL",
                "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM"}


class SQLiteFeedGraph:
    """`FeedGraph` in an SQLite file. Failures to open, lock or write the file
    raise `ServiceUnavailable` naming ATTENDWISE_DATA_DIR."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with self._errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn().execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            code = getattr(e, "sqlite_errorname", None) or ""  # e.g. SQLITE_IOERR_WRITE
            if "_".join(code.split("_")[:2]) in _UNAVAILABLE:
                raise ServiceUnavailable("SQLite", "ATTENDWISE_DATA_DIR", str(self.path), e) from e
            raise
        except OSError as e:
            raise ServiceUnavailable("SQLite", "ATTENDWISE_DATA_DIR", str(self.path), e) from e

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            c.execute("PRAGMA synchronous=NORMAL")
            c.create_function("top_score", 2, top_score, deterministic=True)
            self._local.conn = c
        return c

    def _read(self, sql: str, params: Any = ()) -> list[tuple]:
        with self._errors():
            return self._conn().execute(sql, params).fetchall()

    def install(self, tables: Sequence[Any] = ()) -> None:
        """Creates the `g_` tables and their indexes (idempotent); `tables` is unused."""
        with self._errors():
            c = self._conn()
            for sql in SCHEMA:
                c.execute(sql)

    @contextmanager
    def _write(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Cursor]:
        """One transaction (by default holding the write lock): commits on
        leaving, rolls back on an exception."""
        with self._errors(), sqlite_transaction(self._conn(), begin) as cur:
            yield cur

    @contextmanager
    def transaction(self, name: str, scratch: bool = False) -> Iterator[ChangeBuffer]:
        """Scratch transactions are live ones: the graph is rebuilt in place;
        a live one waits while a rebuild runs."""
        while True:
            with self._write() as cur:
                position, rebuilding = self._position(cur, name)
                if not rebuilding or scratch:
                    tx = ChangeBuffer(position)
                    yield tx
                    self._flush(cur, tx)
                    if tx.new_position is not None:
                        self._set(cur, name, position=tx.new_position)
                    return
            log.info("waiting_for_rebuild", projection=name)
            time.sleep(REBUILD_WAIT)

    def _flush(self, cur: sqlite3.Cursor, tx: ChangeBuffer) -> None:
        for kind, rows in tx.runs():
            for sql, args in WRITES[kind]:
                cur.executemany(sql, [args(r) for r in rows])
            if kind in ("like+", "like-"):
                cur.executemany(_RECOUNT, sorted({(r[1],) for r in rows}))

    def _position(self, cur: sqlite3.Cursor, name: str) -> tuple[int, bool]:
        r = cur.execute("SELECT position, rebuilding FROM g_positions WHERE name = ?", (name,)).fetchone()
        return (int(r[0]), bool(r[1])) if r else (0, False)

    def _set(self, cur: sqlite3.Cursor, name: str, **values: int) -> None:
        """Upserts the position row's `values` (position, rebuilding)."""
        cols = sorted(values)
        cur.execute(f"INSERT INTO g_positions (name, {', '.join(cols)}) VALUES (?{', ?' * len(cols)}) "
                    f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
                    (name, *(values[c] for c in cols)))

    def position(self, name: str) -> int:
        """0 until the graph's tables are made (as in Neo4j: nothing yet)."""
        with self._errors():
            try:
                return self._position(self._conn().cursor(), name)[0]
            except sqlite3.OperationalError as e:
                if "no such table" not in str(e):
                    raise
                return 0

    def feed(self, user_id: str, first: int = 20, after: str | None = None, order: Order = "new") -> FeedPage:
        cursor = check_page(first, order, after)
        params: dict[str, Any] = {"me": user_id, "limit": first + 1}
        if cursor:
            params |= {"value": cursor[0], "post": cursor[1]}
        items = [FeedItem(*r) for r in self._read(FEEDS[order, cursor is not None], params)]
        return make_page(order, items, first)

    def suggested_communities(self, user_id: str, limit: int = 10) -> list[Suggestion]:
        check_limit(limit)
        return [Suggestion(i, n) for i, n in self._read(_SUGGESTED_COMMUNITIES, {"me": user_id, "limit": limit})]

    def suggested_people(self, user_id: str, limit: int = 10) -> list[Suggestion]:
        check_limit(limit)
        return [Suggestion(i, n) for i, n in self._read(_SUGGESTED_PEOPLE, {"me": user_id, "limit": limit})]

    def snapshot(self) -> GraphSnapshot:
        with self._write("BEGIN") as cur:  # one consistent read
            q = lambda sql: cur.execute(sql).fetchall()  # noqa: E731
            return GraphSnapshot(
                users={r[0] for r in q("SELECT id FROM g_users")},
                communities={i: bool(p) for i, p in q("SELECT id, public FROM g_communities")},
                members={(c, u) for c, u in q("SELECT community_id, user_id FROM g_members")},
                follows={(a, b) for a, b in q("SELECT follower_id, followee_id FROM g_follows")},
                blocks={(a, b) for a, b in q("SELECT blocker_id, blocked_id FROM g_blocks")},
                posts={r[0]: (r[1], r[2], r[3], r[4], bool(r[5])) for r in
                       q("SELECT id, author_id, community_id, created_at, likes, removed FROM g_posts")},
                likes={(u, p) for u, p in q("SELECT user_id, post_id FROM g_likes")},
            )

    def start_rebuild(self, name: str, tables: Sequence[Any] = (), fresh: bool = False) -> int:
        """Empties the graph and sets `name` to position 0, rebuilding; unless
        a rebuild is in progress and not `fresh`: then returns its position."""
        with self._write() as cur:
            position, rebuilding = self._position(cur, name)
            if rebuilding and not fresh:
                log.info("graph_rebuild_resumed", projection=name, position=position)
                return position
            for t in GRAPH_TABLES:
                cur.execute(f"DELETE FROM {t}")
            self._set(cur, name, position=0, rebuilding=1)
        log.info("graph_rebuild_started", projection=name)
        return 0

    def swap(self, name: str, tables: Sequence[Any], catch_up: Callable[[Any, int, int], None]) -> int:
        """Ends the rebuild; returns the position. `catch_up` is not called: the
        rebuild wrote the live graph."""
        with self._write() as cur:
            cur.execute("UPDATE g_positions SET rebuilding = 0 WHERE name = ?", (name,))
            position = self._position(cur, name)[0]
        log.info("graph_rebuild_finished", projection=name, position=position)
        return position

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None
