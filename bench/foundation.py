"""AttendWise foundation benchmark: one run, one table, every number beside a
baseline measured in the same run on the same services.

    make bench                    (or: python -m bench [--events N] [--seconds S]  (runs bench.foundation))

Needs PostgreSQL and NATS (`attendwise services up postgres nats`; the
settings from `attendwise services env`). Each measurement uses a fresh
database and a fresh JetStream namespace, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import Progress

from adapters.bus import JetStreamBus
from adapters.eventstore import ApplicationEventLog, open_event_store
from adapters.readmodels import PostgresReadModelStore
from adapters.relay import Relay
from bench.report import print_table
from commands.application import stamp
from commands.messages import CommandContext, RegisterUser
from domain.users import User
from projections.rebuild import rebuild
from projections.users import UsersProjection

console = Console()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_threads(n: int, seconds: float, work: Callable[[int], int]) -> float:
    """`work(i)` does one unit and returns how many items it produced; returns items/s."""
    stop, counts = threading.Event(), [0] * n
    barrier = threading.Barrier(n + 1)

    def loop(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            counts[i] += work(i)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def raw_insert_rate(url: str, clients: int, seconds: float) -> float:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, payload bytea)")
    conns = [psycopg.connect(url, autocommit=True) for _ in range(clients)]
    payload = os.urandom(200)

    def insert(i: int) -> int:
        conns[i].execute("INSERT INTO bench_raw (payload) VALUES (%s)", (payload,), prepare=True)
        return 1

    try:
        return run_threads(clients, seconds, insert)
    finally:
        for c in conns:
            c.close()


def app_append_rate(url: str, writers: int, seconds: float) -> tuple[float, float]:
    """(events/s, commands/s) registering users; each registration is 2 events."""
    app = open_event_store(url, Path("/nonexistent"), group_commit=True)

    def register(i: int) -> int:
        app.register_user(RegisterUser(f"{uuid.uuid4().hex}@bench.org", "Bench"), CommandContext())
        return 2

    try:
        events = run_threads(writers, seconds, register)
        return events, events / 2
    finally:
        app.close()


def _writer_process(url: str, threads: int, seconds: float, start: "mp.Event", out: "mp.Queue[float]") -> None:
    app = open_event_store(url, Path("/nonexistent"), group_commit=True)
    app.register_user(RegisterUser(f"{uuid.uuid4().hex}@bench.org", "Warm"), CommandContext())
    start.wait()

    def register(i: int) -> int:
        app.register_user(RegisterUser(f"{uuid.uuid4().hex}@bench.org", "Bench"), CommandContext())
        return 2

    out.put(run_threads(threads, seconds, register))
    app.close()


def app_append_rate_processes(url: str, processes: int, threads: int, seconds: float) -> float:
    """events/s with writers spread over processes (as `serve` behind several workers)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer_process, args=(url, threads, seconds, start, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(4)  # imports and connections
    start.set()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total


def seed(url: str, n: int, progress: Progress) -> None:
    """n events straight into the recorder, in batches (as many concurrent commands would)."""
    app = open_event_store(url, Path("/nonexistent"), group_commit=False)
    task = progress.add_task(f"seeding {n:,} events", total=n)
    ctx = CommandContext(actor="bench")
    done = 0
    while done < n:
        batch = []
        for _ in range(min(1000, n - done)):
            user = User.register(f"{uuid.uuid4().hex}@bench.org", "Bench User", "Europe/Berlin")
            for ev in user.collect_events():
                stamp(ev, ctx)
                batch.append(app.mapper.to_stored_event(ev))
        app.recorder.insert_events(batch)
        done += len(batch)
        progress.update(task, completed=done)
    app.close()


def raw_read_rate(url: str) -> float:
    """Events read per second by a server-side cursor in binary format (about
    twice psycopg's default text format, which sends the state as hex)."""
    with psycopg.connect(url) as c:
        started = time.perf_counter()
        n = 0
        with c.cursor(name="scan", binary=True) as cur:
            cur.itersize = 5000
            cur.execute("SELECT * FROM attendwise_events ORDER BY notification_id")
            for _ in cur:
                n += 1
        return n / (time.perf_counter() - started)


async def raw_publish_rate(nats_url: str, n: int, payload_size: int) -> float:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"BENCHRAW_{uuid.uuid4().hex[:6].upper()}"
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    payload = os.urandom(payload_size)
    try:
        started = time.perf_counter()
        for start in range(0, n, 1000):
            futures = [await js.publish_async(f"{name.lower()}.x", payload,
                                              headers={"Nats-Msg-Id": uuid.uuid4().hex})
                       for _ in range(min(1000, n - start))]
            await asyncio.gather(*futures)
        return n / (time.perf_counter() - started)
    finally:
        await js.delete_stream(name)
        await nc.close()


async def relay_rate(url: str, nats_url: str) -> tuple[float, int, int]:
    app = open_event_store(url, Path("/nonexistent"))
    log = ApplicationEventLog(app)
    ns = f"bench{uuid.uuid4().hex[:6]}"
    bus = await JetStreamBus.connect(nats_url, namespace=ns)
    try:
        started = time.perf_counter()
        await Relay(log, bus).drain(timeout=600)
        elapsed = time.perf_counter() - started
        head = log.head()
        payload = len(log.read(0, 1)[0].to_json())
        return head / elapsed, head, payload
    finally:
        await bus.js.delete_stream(bus.stream_name)  # type: ignore[attr-defined]
        await bus.close()
        app.close()


def rebuild_rate(url: str) -> float:
    app = open_event_store(url, Path("/nonexistent"))
    store = PostgresReadModelStore(url)
    store.install(UsersProjection.tables)
    log = ApplicationEventLog(app)
    started = time.perf_counter()
    rebuild(UsersProjection(), store, log, fresh=True)
    rate = log.head() / (time.perf_counter() - started)
    assert len(store.rows("users")) == log.head()  # the seed is one registration per event
    store.close()
    app.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")  # noqa: the table goes to stdout
    parser.add_argument("--events", type=int, default=200_000, help="events for the relay and rebuild runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each append measurement")
    args = parser.parse_args()
    admin = os.environ.get("ATTENDWISE_DATABASE_URL")
    nats_url = os.environ.get("ATTENDWISE_NATS_URL")
    if not admin or not nats_url:
        raise SystemExit("set ATTENDWISE_DATABASE_URL and ATTENDWISE_NATS_URL: eval \"$(attendwise services env)\"")
    admin = admin.rsplit("/", 1)[0] + "/postgres"

    rows: list[tuple[str, str, str, str, str]] = []
    with Progress(console=console, transient=True) as progress:
        t = progress.add_task("appending", total=5)
        with fresh_database(admin) as url:
            raw1 = raw_insert_rate(url, 1, args.seconds)
            progress.advance(t)
            raw8 = raw_insert_rate(url, 8, args.seconds)
            progress.advance(t)
        with fresh_database(admin) as url:
            app1, cmd1 = app_append_rate(url, 1, args.seconds)
            progress.advance(t)
            app8, cmd8 = app_append_rate(url, 8, args.seconds)
            progress.advance(t)
            app8p = app_append_rate_processes(url, 2, 4, args.seconds)
            progress.advance(t)
        rows.append(("append, 1 writer (events/s)", f"{app1:,.0f}", f"{raw1:,.0f} raw INSERT commits/s, 1 client",
                     f"{app1 / raw1:.0%}", ">= 50%"))
        rows.append(("append, 8 writers (events/s)", f"{app8:,.0f}", f"{raw8:,.0f} raw INSERT commits/s, 8 clients",
                     f"{app8 / raw8:.0%}", ">= 100%"))
        rows.append(("append, 8 writers as 2 processes x 4 threads", f"{app8p:,.0f}",
                     f"{raw8:,.0f} raw INSERT commits/s, 8 clients", f"{app8p / raw8:.0%}", ">= 100%"))
        rows.append(("  (commands/s: 1 / 8 writers)", f"{cmd1:,.0f} / {cmd8:,.0f}", "each registration = 2 events", "", ""))

        with fresh_database(admin) as url:
            seed(url, args.events, progress)
            progress.add_task("relay -> JetStream", total=None)
            relay, n, size = asyncio.run(relay_rate(url, nats_url))
            raw_pub = asyncio.run(raw_publish_rate(nats_url, min(n, 100_000), size))
            rows.append((f"relay into JetStream ({n:,} events, events/s)", f"{relay:,.0f}",
                         f"{raw_pub:,.0f} raw nats-py JetStream publishes/s ({size} B, pipelined)",
                         f"{relay / raw_pub:.0%}", ">= 10,000/s"))
            progress.add_task("rebuild users", total=None)
            reb = rebuild_rate(url)
            raw_read = raw_read_rate(url)
            rows.append((f"rebuild 'users' ({n:,} events, events/s)", f"{reb:,.0f}",
                         f"{raw_read:,.0f} raw event-table reads/s", f"{reb / raw_read:.0%}", ">= 25,000/s"))

    print_table("AttendWise foundation benchmark (PostgreSQL 15, nats-server, this machine)",
                ("measure", "AttendWise", "baseline (same run)", "ratio", "target"), rows)


if __name__ == "__main__":
    main()
