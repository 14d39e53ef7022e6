"""Feed-graph benchmark: seed a social graph through the feed-graph projector
(events in, one transaction per batch), then time home feeds, on Neo4j and on
the embedded SQLite adapter.

    python -m bench.feed [--scale 0.1] [--readers 1000]

At scale 1: 10,000 users, 200,000 follows, 1,000 communities (10% private),
50,000 memberships, 100,000 posts and 30,000 likes, in transactions of 5,000
changes. Popularity is skewed (a few users and communities draw many
follows, members and posts), so some feeds draw on thousands of posts.

Baselines, measured in the same run on the same store: for the seed, the
same number of bare rows (Neo4j: `UNWIND ... CREATE` of nodes with one
property; SQLite: `executemany` INSERT into a one-column table) in the same
batches; for the feed, a lookup of one user node by id through the same
adapter. Needs Neo4j (`attendwise services up neo4j`; ATTENDWISE_NEO4J_URI
from `attendwise services env`). The Neo4j namespace is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from adapters.graph import FeedGraph
from domain.envelope import EventEnvelope
from projections.feed_graph import FeedGraphProjection
from projections.projector import Projector
from adapters.graph_neo4j import DATABASE, Neo4jFeedGraph
from adapters.graph_sql import SQLiteFeedGraph
from bench.report import percentiles, print_table

console = Console()
BATCH = 5000
T0 = 1_750_000_000.0
DAYS = 30 * 86400.0
Call = tuple[Any, ...]


def skewed(rng: random.Random, n: int) -> int:
    """0..n-1, low numbers far more often (popular users and communities)."""
    return int(n * rng.random() ** 2)


def world(scale: float, seed: int = 42) -> list[Call]:
    """The seed's `GraphTx` calls, in the order a projection would make them
    for a history where everyone registers first and posts come in time order."""
    rng = random.Random(seed)
    n_users, n_communities = int(10_000 * scale), int(1_000 * scale)
    out: list[Call] = [("user", f"u{i}") for i in range(n_users)]
    out += [("community", f"c{i}", rng.random() >= 0.1) for i in range(n_communities)]
    out += [("membership", f"c{skewed(rng, n_communities)}", f"u{rng.randrange(n_users)}", True)
            for _ in range(int(50_000 * scale))]
    out += [("follow", f"u{rng.randrange(n_users)}", f"u{skewed(rng, n_users)}", True)
            for _ in range(int(200_000 * scale))]
    n_posts = int(100_000 * scale)
    out += [("post", f"p{i}", f"u{rng.randrange(n_users)}", f"c{skewed(rng, n_communities)}",
             T0 + DAYS * i / n_posts) for i in range(n_posts)]
    out += [("like", f"u{rng.randrange(n_users)}", f"p{n_posts - 1 - skewed(rng, n_posts)}", True)
            for _ in range(int(30_000 * scale))]
    return out


def as_event(position: int, call: Call) -> EventEnvelope:
    """The domain event that makes the feed-graph projection issue `call`."""
    kind, *args = call
    aggregate, data = args[0], {}
    if kind == "user":
        event_type = "UserRegistered"
    elif kind == "community":
        event_type, data = "CommunityCreated", {"visibility": "public" if args[1] else "private"}
    elif kind == "membership":
        event_type, data = "MembershipBegan", {"community_id": args[0], "user_id": args[1], "status": "member"}
    elif kind == "follow":
        event_type, data = "FollowStarted", {"follower_id": args[0], "followee_id": args[1]}
    elif kind == "post":
        published = dt.datetime.fromtimestamp(args[3], dt.timezone.utc).isoformat()
        event_type, data = "PostPublished", {"author_id": args[1], "community_id": args[2], "published_at": published}
    else:
        event_type, data = "LikeGiven", {"user_id": args[0], "post_id": args[1]}
    return EventEnvelope(position, str(position), event_type, "bench", aggregate, 1, "", 1, "bench", "", data)


def seed(graph: FeedGraph, calls: list[Call], progress: Progress, label: str) -> float:
    """Applies the events of `calls` through the feed-graph projector, in
    batches of BATCH (one transaction each); returns events/s."""
    events = [as_event(i + 1, c) for i, c in enumerate(calls)]
    projector = Projector(FeedGraphProjection(), graph)  # type: ignore[arg-type]
    task = progress.add_task(f"seeding {label}", total=len(events))
    started = time.perf_counter()
    for at in range(0, len(events), BATCH):
        projector.handle(events[at:at + BATCH])
        progress.update(task, completed=min(at + BATCH, len(events)))
    return len(events) / (time.perf_counter() - started)


def raw_neo4j_rate(graph: Neo4jFeedGraph, n: int) -> float:
    """Bare nodes/s: `UNWIND $rows CREATE` in batches of BATCH, one transaction each."""
    label = f"BenchRaw{uuid.uuid4().hex[:6]}"
    driver = graph._driver  # noqa: SLF001 - the same connection the adapter uses
    started = time.perf_counter()
    for at in range(0, n, BATCH):
        driver.execute_query(f"UNWIND $rows AS r CREATE (:{label} {{id: r}})",
                             rows=list(range(at, min(n, at + BATCH))), database_=DATABASE)
    rate = n / (time.perf_counter() - started)
    while driver.execute_query(f"MATCH (n:{label}) WITH n LIMIT 50000 DELETE n RETURN count(*) AS n",
                               database_=DATABASE).records[0]["n"]:
        pass
    return rate


def raw_sqlite_rate(path: Path, n: int) -> float:
    """Bare rows/s: `executemany` INSERT in batches of BATCH, one transaction each."""
    import sqlite3

    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE bench_raw (id TEXT PRIMARY KEY) WITHOUT ROWID")
    started = time.perf_counter()
    for at in range(0, n, BATCH):
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO bench_raw (id) VALUES (?)", [(f"r{i}",) for i in range(at, min(n, at + BATCH))])
        c.execute("COMMIT")
    rate = n / (time.perf_counter() - started)
    c.close()
    return rate


def latencies(users: list[str], call: Callable[[str], object]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of `call(user)` for each user, after a warm-up."""
    for u in users[:50]:
        call(u)
    times = []
    for u in users:
        t = time.perf_counter()
        call(u)
        times.append((time.perf_counter() - t) * 1000)
    p50, p95 = percentiles(times, 50, 95)
    return p50, p95


def measure(name: str, graph: FeedGraph, lookup: Callable[[str], object], readers: list[str],
            seed_rate: float, raw_rate: float, n_changes: int) -> Iterator[tuple[str, str, str, str, str]]:
    base50, base95 = latencies(readers, lookup)
    yield (f"{name}: seed {n_changes:,} events through the projector (events/s)", f"{seed_rate:,.0f}",
           f"{raw_rate:,.0f} bare rows/s, same batches", f"{seed_rate / raw_rate:.0%}", ">= 2,000/s")
    for order in ("new", "top"):
        p50, p95 = latencies(readers, lambda u: graph.feed(u, first=20, order=order))  # noqa: B023
        yield (f"{name}: home feed '{order}', first 20 (p50 / p95 ms)", f"{p50:.1f} / {p95:.1f}",
               f"{base50:.3g} / {base95:.3g} ms user lookup by id", f"{p95 / base95:.0f}x", "p95 < 50 ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feed")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full data set (0.1: quick run)")
    parser.add_argument("--readers", type=int, default=1000, help="random users whose home feed is timed")
    args = parser.parse_args()
    uri = os.environ.get("ATTENDWISE_NEO4J_URI")
    if not uri:
        raise SystemExit("set ATTENDWISE_NEO4J_URI: eval \"$(attendwise services env)\"")

    calls = world(args.scale)
    n_users = sum(1 for c in calls if c[0] == "user")
    readers = [f"u{i}" for i in random.Random(7).sample(range(n_users), min(args.readers, n_users))]
    rows: list[tuple[str, str, str, str, str]] = []
    with Progress(console=console, transient=True) as progress:
        neo = Neo4jFeedGraph(uri, namespace=f"bench{uuid.uuid4().hex[:8]}")
        try:
            neo.install()
            rate = seed(neo, calls, progress, "Neo4j")
            raw = raw_neo4j_rate(neo, min(len(calls), 100_000))
            by_id = "MATCH (u:User {ns: $ns, id: $me}) RETURN u.id"
            rows += measure("Neo4j", neo, lambda u: neo._read(by_id, me=u),  # noqa: SLF001 - same path as feed
                            readers, rate, raw, len(calls))
        finally:
            neo.drop()
            neo.close()
        with tempfile.TemporaryDirectory() as d:
            lite = SQLiteFeedGraph(Path(d) / "graph.sqlite3")
            lite.install()
            rate = seed(lite, calls, progress, "SQLite")
            raw = raw_sqlite_rate(Path(d) / "raw.sqlite3", min(len(calls), 100_000))
            row_by_id = "SELECT id FROM g_users WHERE id = ?"
            rows += measure("SQLite", lite, lambda u: lite._read(row_by_id, (u,)),  # noqa: SLF001 - same path as feed
                            readers, rate, raw, len(calls))
            lite.close()

    print_table(f"AttendWise feed-graph benchmark (scale {args.scale:g}: {n_users:,} users, {len(calls):,} changes; "
                "Neo4j 5 community, SQLite, this machine)",
                ("measure", "AttendWise", "baseline (same run)", "ratio", "target"), rows)


if __name__ == "__main__":
    main()
