"""The social graph on Neo4j (full mode): adapter of `FeedGraph` (contract in
adapters/graph.py, tested by tests/contract/test_feed_graph.py).

Nodes `User`, `Community`, `Post` and `Projection` (a projection's position),
each with property `ns`: several namespaces share one database, and every key
is unique per (ns, id) (composite uniqueness constraints, community edition).
Relationships: (User)-[:FOLLOWS]->(User), (User)-[:BLOCKED]->(User),
(User)-[:MEMBER_OF]->(Community), (User)-[:AUTHORED]->(Post),
(Post)-[:POSTED_IN]->(Community), (User)-[:LIKED]->(Post). A post keeps
`author`, `community`, `created_at`, `likes` (the number of LIKED
relationships), `score` (`top_score`, computed by the server) and `removed`.

A transaction is one explicit Neo4j transaction: it first writes the
projection's node (so two transactions of one projection serialize), buffers
the `GraphTx` calls and, on leaving the block, sends each run of like calls as
one `UNWIND $rows` statement, writes the new position and commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import structlog

from adapters._neo4j_driver import neo4j
from neo4j.exceptions import ServiceUnavailable as DriverUnavailable
from neo4j.exceptions import SessionExpired

from adapters.errors import ServiceUnavailable
from adapters.graph import (REBUILD_WAIT, ChangeBuffer, FeedItem, FeedPage, GraphSnapshot, Order, Suggestion,
                            check_limit, check_page, make_page)

log = structlog.get_logger("feed_graph")

DATABASE = "neo4j"
CHUNK = 10_000  # rows per UNWIND statement
KEYS = {"User": "id", "Community": "id", "Post": "id", "Projection": "name"}
FIELDS = {"user": ("id",), "community": ("id", "public"), "member": ("community", "user"), "follow": ("a", "b"),
          "block": ("a", "b"), "post": ("id", "author", "community", "created_at"), "remove": ("id",),
          "like": ("user", "post")}

_RECOUNT = ("WITH p, count(*) AS _ WITH p, COUNT { (p)<-[:LIKED]-() } AS n "
            "SET p.likes = n, p.score = log10(CASE WHEN n > 1 THEN n ELSE 1 END) + p.created_at / 45000.0")
# kind -> the statement applying a run of rows (`r`); MERGEs make every call idempotent
WRITES = {
    "user": "UNWIND $rows AS r MERGE (:User {ns: $ns, id: r.id})",
    "community": "UNWIND $rows AS r MERGE (c:Community {ns: $ns, id: r.id}) SET c.public = r.public",
    "member+": "UNWIND $rows AS r MERGE (c:Community {ns: $ns, id: r.community}) ON CREATE SET c.public = false "
               "MERGE (u:User {ns: $ns, id: r.user}) MERGE (u)-[:MEMBER_OF]->(c)",
    "member-": "UNWIND $rows AS r MATCH (:User {ns: $ns, id: r.user})-[m:MEMBER_OF]->"
               "(:Community {ns: $ns, id: r.community}) DELETE m",
    "follow+": "UNWIND $rows AS r MERGE (a:User {ns: $ns, id: r.a}) MERGE (b:User {ns: $ns, id: r.b}) "
               "MERGE (a)-[:FOLLOWS]->(b)",
    "follow-": "UNWIND $rows AS r MATCH (:User {ns: $ns, id: r.a})-[f:FOLLOWS]->(:User {ns: $ns, id: r.b}) DELETE f",
    "block+": "UNWIND $rows AS r MERGE (a:User {ns: $ns, id: r.a}) MERGE (b:User {ns: $ns, id: r.b}) "
              "MERGE (a)-[:BLOCKED]->(b)",
    "block-": "UNWIND $rows AS r MATCH (:User {ns: $ns, id: r.a})-[b:BLOCKED]->(:User {ns: $ns, id: r.b}) DELETE b",
    # the stored post decides its author and community (a repeated id changes nothing)
    "post": "UNWIND $rows AS r MERGE (p:Post {ns: $ns, id: r.id}) "
            "ON CREATE SET p.author = r.author, p.community = r.community, p.created_at = r.created_at, "
            "p.likes = 0, p.removed = false, p.score = r.created_at / 45000.0 "
            "MERGE (a:User {ns: $ns, id: p.author}) "
            "MERGE (c:Community {ns: $ns, id: p.community}) ON CREATE SET c.public = false "
            "MERGE (a)-[:AUTHORED]->(p) MERGE (p)-[:POSTED_IN]->(c)",
    "remove": "UNWIND $rows AS r MATCH (p:Post {ns: $ns, id: r.id}) SET p.removed = true",
    # likes of a post that does not exist are dropped; `likes` is recounted for the posts touched
    "like+": "UNWIND $rows AS r MATCH (p:Post {ns: $ns, id: r.post}) MERGE (u:User {ns: $ns, id: r.user}) "
             "MERGE (u)-[:LIKED]->(p) " + _RECOUNT,
    "like-": "UNWIND $rows AS r MATCH (:User {ns: $ns, id: r.user})-[l:LIKED]->(p:Post {ns: $ns, id: r.post}) "
             "DELETE l " + _RECOUNT,
}

_LOCK = ("MERGE (p:Projection {ns: $ns, name: $name}) ON CREATE SET p.position = 0, p.rebuilding = false "
         "SET p._lock = coalesce(p._lock, 0) + 1 RETURN p.position AS position, p.rebuilding AS rebuilding")

# Starts from `me` and touches only its neighbourhood: posts of followed
# authors (in public communities or mine) and of my communities, then the
# other rules, then the order. Relationship types imply the labels, so nodes
# past `me` are not label-checked.
_FEED = """
MATCH (me:User {ns: $ns, id: $me})
OPTIONAL MATCH (me)-[:MEMBER_OF]->(m)
WITH me, collect(m) AS mine
OPTIONAL MATCH (me)-[:BLOCKED]-(b)
WITH me, mine, collect(b.id) AS blocked
CALL (me, mine) {
  MATCH (me)-[:FOLLOWS]->()-[:AUTHORED]->(p)-[:POSTED_IN]->(c)
  WHERE c.public OR c IN mine
  RETURN p
  UNION
  UNWIND mine AS c MATCH (c)<-[:POSTED_IN]-(p) RETURN p
}
WITH p, blocked
WHERE NOT p.removed AND NOT p.author IN blocked {after}
RETURN p.id AS id, p.author AS author, p.community AS community, p.created_at AS created_at,
       p.likes AS likes, p.score AS score
ORDER BY p.{key} DESC, p.id DESC LIMIT $limit
"""
_AFTER = "AND (p.{key} < $value OR (p.{key} = $value AND p.id < $post))"
# (order, after a cursor?) -> query
FEEDS = {(order, paged): _FEED.replace("{after}", _AFTER if paged else "").replace("{key}", key)
         for order, key in (("new", "created_at"), ("top", "score")) for paged in (False, True)}

_SUGGESTED_COMMUNITIES = """
MATCH (me:User {ns: $ns, id: $me})-[:FOLLOWS]->(f:User)-[:MEMBER_OF]->(c:Community)
WHERE c.public AND NOT (me)-[:MEMBER_OF]->(c)
WITH c.id AS id, count(DISTINCT f) AS n
RETURN id, n ORDER BY n DESC, id LIMIT $limit
"""
_SUGGESTED_PEOPLE = """
MATCH (me:User {ns: $ns, id: $me})-[:FOLLOWS]->(f:User)-[:FOLLOWS]->(s:User)
WHERE s <> me AND NOT (me)-[:FOLLOWS]->(s) AND NOT (me)-[:BLOCKED]-(s)
WITH s.id AS id, count(DISTINCT f) AS n
RETURN id, n ORDER BY n DESC, id LIMIT $limit
"""
_SNAPSHOT = {
    "users": "MATCH (u:User) WHERE u.ns = $ns AND u.id IS NOT NULL RETURN u.id",
    "communities": "MATCH (c:Community) WHERE c.ns = $ns AND c.id IS NOT NULL RETURN c.id, c.public",
    "members": "MATCH (u:User)-[:MEMBER_OF]->(c) WHERE u.ns = $ns AND u.id IS NOT NULL RETURN c.id, u.id",
    "follows": "MATCH (a:User)-[:FOLLOWS]->(b) WHERE a.ns = $ns AND a.id IS NOT NULL RETURN a.id, b.id",
    "blocks": "MATCH (a:User)-[:BLOCKED]->(b) WHERE a.ns = $ns AND a.id IS NOT NULL RETURN a.id, b.id",
    "posts": "MATCH (p:Post) WHERE p.ns = $ns AND p.id IS NOT NULL "
             "RETURN p.id, p.author, p.community, p.created_at, p.likes, p.removed",
    "likes": "MATCH (u:User)-[:LIKED]->(p) WHERE u.ns = $ns AND u.id IS NOT NULL RETURN u.id, p.id",
}


READ_RETRY_TIME = 2.0  # seconds the driver retries a read that failed for a transient reason


class Neo4jFeedGraph:
    """`FeedGraph` in Neo4j, in namespace `namespace`. An unreachable server
    raises `ServiceUnavailable` naming `setting` (at construction, too)."""

    def __init__(self, uri: str, namespace: str = "attendwise", setting: str = "ATTENDWISE_NEO4J_URI") -> None:
        self.uri, self.ns, self.setting = uri, namespace, setting
        # the driver connects on first use: a process that never reads the graph needs no Neo4j.
        # Its managed transactions (every read) retry for 30 s by default: with Neo4j down a feed read
        # would hang that long; give up after READ_RETRY_TIME and answer `ServiceUnavailable`.
        self._driver = neo4j.GraphDatabase.driver(uri, auth=None, connection_timeout=5,
                                                  max_transaction_retry_time=READ_RETRY_TIME,
                                                  notifications_min_severity="OFF")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (DriverUnavailable, SessionExpired) as e:
            raise ServiceUnavailable("Neo4j", self.setting, self.uri, e) from e

    def _read(self, query: str, **params: Any) -> list[neo4j.Record]:
        with self._errors():
            return self._driver.execute_query(query, params, database_=DATABASE, routing_=neo4j.RoutingControl.READ,
                                              ns=self.ns).records

    def install(self, tables: Sequence[Any] = ()) -> None:
        """Creates the (ns, key) uniqueness constraints (their indexes serve
        every lookup) and waits for them; `tables` is unused."""
        with self._errors():
            for label, key in KEYS.items():
                self._driver.execute_query(f"CREATE CONSTRAINT graph_{label.lower()}_key IF NOT EXISTS "
                                           f"FOR (n:{label}) REQUIRE (n.ns, n.{key}) IS UNIQUE", database_=DATABASE)
            self._driver.execute_query("CALL db.awaitIndexes(300)", database_=DATABASE)

    @contextmanager
    def _locked(self, name: str) -> Iterator[tuple[neo4j.Transaction, int, bool]]:
        """One explicit transaction holding the projection's node: (tx,
        position, rebuilding). Commits on leaving, rolls back on an exception."""
        with self._errors(), self._driver.session(database=DATABASE) as session:
            with session.begin_transaction() as tx:
                r = tx.run(_LOCK, ns=self.ns, name=name).single(strict=True)
                yield tx, r["position"], r["rebuilding"]
                tx.commit()

    @contextmanager
    def transaction(self, name: str, scratch: bool = False) -> Iterator[ChangeBuffer]:
        """Scratch transactions are live ones: the graph is rebuilt in place;
        a live one waits while a rebuild runs."""
        while True:
            with self._locked(name) as (tx, position, rebuilding):
                if not rebuilding or scratch:
                    buffer = ChangeBuffer(position)
                    yield buffer
                    self._flush(tx, buffer)
                    if buffer.new_position is not None:
                        tx.run("MATCH (p:Projection {ns: $ns, name: $name}) SET p.position = $position",
                               ns=self.ns, name=name, position=buffer.new_position).consume()
                    return
            log.info("waiting_for_rebuild", projection=name)
            time.sleep(REBUILD_WAIT)

    def _flush(self, tx: neo4j.Transaction, buffer: ChangeBuffer) -> None:
        for kind, rows in buffer.runs():
            fields = FIELDS[kind.rstrip("+-")]
            for i in range(0, len(rows), CHUNK):
                chunk = [dict(zip(fields, r)) for r in rows[i:i + CHUNK]]
                tx.run(WRITES[kind], ns=self.ns, rows=chunk).consume()

    def position(self, name: str) -> int:
        records = self._read("MATCH (p:Projection {ns: $ns, name: $name}) RETURN p.position", name=name)
        return int(records[0][0]) if records else 0

    def feed(self, user_id: str, first: int = 20, after: str | None = None, order: Order = "new") -> FeedPage:
        cursor = check_page(first, order, after)
        params: dict[str, Any] = {"me": user_id, "limit": first + 1}
        if cursor:
            params |= {"value": cursor[0], "post": cursor[1]}
        items = [FeedItem(r["id"], r["author"], r["community"], r["created_at"], r["likes"], r["score"])
                 for r in self._read(FEEDS[order, cursor is not None], **params)]
        return make_page(order, items, first)

    def suggested_communities(self, user_id: str, limit: int = 10) -> list[Suggestion]:
        check_limit(limit)
        return [Suggestion(r["id"], r["n"]) for r in self._read(_SUGGESTED_COMMUNITIES, me=user_id, limit=limit)]

    def suggested_people(self, user_id: str, limit: int = 10) -> list[Suggestion]:
        check_limit(limit)
        return [Suggestion(r["id"], r["n"]) for r in self._read(_SUGGESTED_PEOPLE, me=user_id, limit=limit)]

    def snapshot(self) -> GraphSnapshot:
        def read(tx: neo4j.ManagedTransaction) -> dict[str, list[list[Any]]]:
            return {part: [r.values() for r in tx.run(q, ns=self.ns)] for part, q in _SNAPSHOT.items()}

        with self._errors(), self._driver.session(database=DATABASE) as session:
            parts = session.execute_read(read)
        return GraphSnapshot(
            users={r[0] for r in parts["users"]},
            communities={i: bool(p) for i, p in parts["communities"]},
            members={(c, u) for c, u in parts["members"]},
            follows={(a, b) for a, b in parts["follows"]},
            blocks={(a, b) for a, b in parts["blocks"]},
            posts={r[0]: (r[1], r[2], r[3], r[4], bool(r[5])) for r in parts["posts"]},
            likes={(u, p) for u, p in parts["likes"]},
        )

    def start_rebuild(self, name: str, tables: Sequence[Any] = (), fresh: bool = False) -> int:
        """Sets `name` to position 0, rebuilding, then empties the graph (in
        batches); unless a rebuild is in progress past position 0 and not
        `fresh`: then returns its position (a rebuild interrupted while
        emptying empties again)."""
        with self._locked(name) as (tx, position, rebuilding):
            if rebuilding and position > 0 and not fresh:
                log.info("graph_rebuild_resumed", projection=name, position=position)
                return position
            tx.run("MATCH (p:Projection {ns: $ns, name: $name}) SET p.position = 0, p.rebuilding = true",
                   ns=self.ns, name=name).consume()
        self._delete(("Post", "Community", "User"))
        log.info("graph_rebuild_started", projection=name)
        return 0

    def swap(self, name: str, tables: Sequence[Any], catch_up: Callable[[Any, int, int], None]) -> int:
        """Ends the rebuild; returns the position. `catch_up` is not called: the
        rebuild wrote the live graph."""
        with self._locked(name) as (tx, position, _):
            tx.run("MATCH (p:Projection {ns: $ns, name: $name}) SET p.rebuilding = false",
                   ns=self.ns, name=name).consume()
        log.info("graph_rebuild_finished", projection=name, position=position)
        return position

    def _delete(self, labels: Sequence[str], batch: int = 2_000) -> None:
        with self._errors():
            for label in labels:
                key = KEYS[label]
                while self._driver.execute_query(
                        f"MATCH (n:{label}) WHERE n.ns = $ns AND n.{key} IS NOT NULL WITH n LIMIT $batch "
                        "DETACH DELETE n RETURN count(*) AS n", ns=self.ns, batch=batch,
                        database_=DATABASE).records[0]["n"]:
                    pass

    def drop(self) -> None:
        """Deletes every node of the namespace, positions included (tests, benchmarks)."""
        self._delete(tuple(KEYS))

    def ping(self) -> None:
        with self._errors():
            self._driver.verify_connectivity()

    def close(self) -> None:
        self._driver.close()
