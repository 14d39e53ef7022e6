"""Rebuild and audit benchmark: how fast every read-model projection is
rebuilt from a large log, beside how fast the same log can merely be read,
and how fast the audit chain seals and verifies it.

    python -m bench.rebuild [--events 1000000] [--sqlite-events 200000] [--audit-events 50000] [--batch 5000]

The log is a realistic mix, appended in bulk through the application's own
aggregates, mapper and recorder (personal fields encrypted with a key per
person, as in production): users and their email claims, communities and
memberships, follows, weekly series with their sessions, places, tickets and
QR check-ins (attempt, nonce used, verdict, presence, attendance), posts,
comments and likes. Each projection reads only its own kinds of events and
skips the rest, as it does live.

Measured in the same run on the same database, for PostgreSQL (fresh
database, dropped afterwards) and then an SQLite file:
- baselines: a raw SQL scan of the stored events (a server-side cursor in
  binary format, nothing decoded; the median of three scans, their spread
  printed; the same scan in psycopg's default text format, about half as
  fast, is printed beside it: it was the baseline until 2026-11-28) and
  `ApplicationEventLog.read` pages (decoded, upcast, personal fields
  decrypted: what a rebuild reads);
- `rebuild` (scratch tables, then the swap) of each projection of the
  catalogue, events of the log per second; the sum of those five runs; and
  `rebuild_together` of all five, as `attendwise rebuild --all --workers 1`
  runs them (the log read and decoded once); and `rebuild_in_processes`, as
  `attendwise rebuild --all` runs them on this machine: as many processes
  as there are cores, each rebuilding a group of projections from one read
  of the log, the groups balanced by the events they read (`plan_processes`);
- `Sealer.seal()` and `verify()` of the audit chain over the first
  `--audit-events` events (sealing writes one row per event, one commit each).

Target: each rebuild at least 25% of the raw scan rate. The feed graph is
not included (`bench/feed.py` measures it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from adapters.audit_chain import Sealer, postgres_seals, sqlite_seals, verify
from adapters.eventstore import ApplicationEventLog, _inner, events_table, open_event_store
from adapters.personal_data import PostgresKeyVault, SQLiteKeyVault
from adapters.readmodels import PostgresReadModelStore, ReadModelStore, SQLiteReadModelStore
from adapters.tokens import Keyring
from bench.foundation import fresh_database
from bench.report import print_table
from commands.application import AttendWise, stamp
from commands.messages import CommandContext
from domain.attendance import CheckIn, Presence, Roster, Ticket
from domain.communities import Community, Membership
from domain.recurrence import Recurrence
from domain.scheduling import Series, Session
from domain.social import Comment, Follow, Like, Post
from domain.users import EmailAddress, User
from projections.catalogue import all_projections
from projections.rebuild import Opener, Target, plan_processes, rebuild, rebuild_in_processes, rebuild_together

console = Console()
NOW = dt.datetime(2026, 1, 5, 12, tzinfo=dt.timezone.utc)
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
RAW_SCANS = 3  # the baseline is the median of this many raw scans


class World:
    """A community platform growing block by block (about 850 events per
    block). Every aggregate id is new, so the whole log appends in bulk."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.users: list[str] = []
        self.communities: list[Community] = []
        self.posts: list[Post] = []
        self.pairs: set[tuple[str, str, str]] = set()  # memberships, follows, likes already made

    def _pair(self, kind: str, a: str, b: str) -> bool:
        if a == b or (kind, a, b) in self.pairs:
            return False
        self.pairs.add((kind, a, b))
        return True

    def _user(self, skewed: bool = False) -> str:
        n = len(self.users)
        return self.users[int(n * self.rng.random() ** 2) if skewed else self.rng.randrange(n)]

    def block(self) -> Iterator[Any]:
        """The aggregates of one block, each with its pending events."""
        rng = self.rng
        for _ in range(40):
            u = User.register(f"{uuid.uuid4().hex}@bench.example", f"Member {len(self.users)}", rng.choice(ZONES))
            self.users.append(str(u.id))
            yield u
            yield EmailAddress(email=u.email, user_id=u.id)
        founder = self._user()
        c = Community.found(f"Community {len(self.communities)}", "A bench community", "public", uuid.UUID(founder))
        self.communities.append(c)
        self._pair("member", str(c.id), founder)
        yield c
        yield Membership.first(c, founder, role="admin", status="member")
        for _ in range(60):
            c, u = self.communities[int(len(self.communities) * rng.random() ** 2)], self._user()
            if self._pair("member", str(c.id), u):
                yield Membership.first(c, u)
        for _ in range(120):
            a, b = self._user(), self._user(skewed=True)
            if self._pair("follow", a, b):
                yield Follow(follower_id=a, followee_id=b)
        yield from self._series(c, founder)
        for _ in range(60):
            p = Post.publish(self.communities[int(len(self.communities) * rng.random() ** 2)].id,
                             uuid.UUID(self._user()), "Hello everyone " * rng.randint(1, 8), [], NOW)
            self.posts.append(p)
            yield p
        recent = self.posts[-2000:]
        for _ in range(40):
            yield Comment.write(rng.choice(recent), uuid.UUID(self._user()), "Nice one " * rng.randint(1, 5), NOW)
        for _ in range(150):
            p, u = recent[len(recent) - 1 - int(len(recent) * rng.random() ** 2)], self._user()
            if self._pair("like", str(p.id), u):
                yield Like(post_id=str(p.id), user_id=u)

    def _series(self, c: Community, host: str) -> Iterator[Any]:
        rng = self.rng
        for _ in range(2):
            rec = Recurrence(dt.datetime(2026, 2, 2, 18, 30) + dt.timedelta(days=rng.randrange(60)),
                             rng.choice(ZONES), dt.timedelta(minutes=90), "FREQ=WEEKLY;COUNT=6")
            series = Series(**Series.plan("Weekly meet-up", str(c.id), [host], rec, {"name": "Hall"}, 30,
                                          "public", NOW))
            yield series
            for occ in series.occurrences():
                session = Session.for_occurrence(series, occ)
                yield session
                roster = Roster(session_id=str(session.id))
                members = rng.sample(self.users, 6)
                for m in members:
                    roster.reserve(m, session.capacity)
                yield roster
                for m in members[:3]:
                    ticket = Ticket(session_id=str(session.id), user_id=m, nonce=secrets.token_urlsafe(16),
                                    issued_at=NOW)
                    checkin = CheckIn(session_id=str(session.id), user_id=m, ticket_id=str(ticket.id),
                                      device_id="kiosk-1", gate="main", direction="in", policy="qr",
                                      scanned_at=NOW, received_at=NOW, offline=False)
                    ticket.use(ticket.nonce, checkin.id)
                    presence = Presence(session_id=str(session.id), user_id=m)
                    presence.scan(checkin.id, "in", "main")
                    checkin.decide(True, "OK")
                    session.record_attendance()
                    yield ticket
                    yield checkin
                    yield presence
                    yield session  # its attendance events (the first one only)


def seed(app: AttendWise, n: int, progress: Progress, label: str, batch: int = 5000) -> int:
    """At least `n` events of the world, stored in batches of about `batch`."""
    world, ctx = World(), CommandContext(actor="bench")
    task = progress.add_task(f"seeding {label}", total=n)
    done, pending = 0, []
    while done < n:
        for aggregate in world.block():
            for ev in aggregate.collect_events():
                stamp(ev, ctx)
                pending.append(ev)
        if len(pending) >= batch or done + len(pending) >= n:
            app.recorder.insert_events([app.mapper.to_stored_event(ev) for ev in pending])
            done += len(pending)
            pending = []
            progress.update(task, completed=done)
    progress.remove_task(task)
    return done


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def raw_scan_pg(url: str, table: str, binary: bool = True) -> int:
    """Every stored event through a server-side cursor, nothing decoded. In
    binary format (the state's bytes as they are) it runs about twice as
    fast as in psycopg's default text format (bytea as hex)."""
    import psycopg

    n = 0
    with psycopg.connect(url) as c, c.cursor(name="scan", binary=binary) as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT * FROM {table} ORDER BY notification_id")
        for _ in cur:
            n += 1
    return n


def raw_scan_sqlite(path: Path, table: str) -> int:
    c = sqlite3.connect(path)
    n = sum(1 for _ in c.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid"))
    c.close()
    return n


def read_pages(log: ApplicationEventLog, page: int = 5000) -> int:
    after = n = 0
    while events := log.read(after, page):
        n += len(events)
        after = events[-1].position
    return n


def opened(url: str | None, folder: Path | None) -> tuple[ApplicationEventLog, dict[str, Target]]:
    """This benchmark's log and every projection with its store, on
    PostgreSQL (`url`) or SQLite files in `folder`: what a rebuild worker
    process opens (picklable as a partial)."""
    if url:
        app = open_event_store(url, Path("/nonexistent"), group_commit=False, vault=PostgresKeyVault(url))
        store: ReadModelStore = PostgresReadModelStore(url)
    else:
        assert folder is not None
        app = open_event_store(None, folder / "events.sqlite3", vault=SQLiteKeyVault(folder / "keys.sqlite3"))
        store = SQLiteReadModelStore(folder / "readmodels.sqlite3")
    return ApplicationEventLog(app), {name: (p, store) for name, p in all_projections().items()}


def measure(label: str, opener: Opener, log: ApplicationEventLog, targets_by_name: dict[str, Target], seals: Any,
            raw_scan: Callable[[], int], audit_events: int, batch: int,
            progress: Progress, other_scans: dict[str, Callable[[], int]] | None = None,
            ) -> list[tuple[str, str, str, str, str]]:
    """The table's rows for one database; `opener` opens `log` and
    `targets_by_name` anew (in each worker process)."""
    store = next(iter(targets_by_name.values()))[1]
    head = log.head()
    scanned = raw_scan()  # warm the cache once: both sides then read from memory
    assert scanned == head

    def rates(scan: Callable[[], int]) -> list[float]:  # one scan varies by a third here from minute to minute
        return sorted(head / timed(scan) for _ in range(RAW_SCANS))

    scans = rates(raw_scan)
    raw_rate = statistics.median(scans)
    rows = [(f"{label}: raw SQL scan of the stored events", f"{raw_rate:,.0f}", "(the baseline)", "100%",
             f"(median of {RAW_SCANS}: {scans[0]:,.0f} to {scans[-1]:,.0f})")]
    for other, scan in (other_scans or {}).items():
        rate = statistics.median(rates(scan))
        rows.append((f"{label}: {other}", f"{rate:,.0f}", f"{raw_rate:,.0f} raw scan", f"{rate / raw_rate:.0%}", ""))
    pages = head / timed(lambda: read_pages(log))
    rows.append((f"{label}: ApplicationEventLog.read pages (decoded, decrypted)", f"{pages:,.0f}",
                 f"{raw_rate:,.0f} raw scan", f"{pages / raw_rate:.0%}", ""))
    total = 0.0
    for name, (projection, _) in targets_by_name.items():
        task = progress.add_task(f"{label}: rebuild {name}", total=head)
        took = timed(lambda: rebuild(projection, store, log, fresh=True, batch=batch,  # noqa: B023
                                     progress=lambda pos, _: progress.update(task, completed=pos)))  # noqa: B023
        progress.remove_task(task)
        total += took
        rows.append((f"{label}: rebuild '{name}'", f"{head / took:,.0f}", f"{raw_rate:,.0f} raw scan",
                     f"{head / took / raw_rate:.0%}", ">= 25%"))
    rows.append((f"{label}: the {len(targets_by_name)} rebuilds one after another",
                 f"{head / total:,.0f}", f"{raw_rate:,.0f} raw scan", f"{head / total / raw_rate:.0%}",
                 f"({total:,.0f} s in all)"))
    task = progress.add_task(f"{label}: rebuild --all", total=head)
    targets = list(targets_by_name.values())
    took = timed(lambda: rebuild_together(targets, log, fresh=True, batch=batch,
                                          progress=lambda pos, _: progress.update(task, completed=pos)))
    progress.remove_task(task)
    rows.append((f"{label}: rebuild --all in one process (one read of the log for all {len(targets)})",
                 f"{head / took:,.0f}", f"{raw_rate:,.0f} raw scan", f"{head / took / raw_rate:.0%}", f"({took:,.0f} s)"))
    workers = os.cpu_count() or 1
    groups = plan_processes(list(targets_by_name), {n: p for n, (p, _) in targets_by_name.items()}, log.counts(),
                            workers)
    names = [n for group in groups for n in group]
    task = progress.add_task(f"{label}: rebuild --all in {workers} processes", total=head * len(names))
    reached: dict[str, int] = {}

    def advance(name: str, position: int, _: int) -> None:
        reached[name] = position
        progress.update(task, completed=sum(reached.values()))

    with PeakChildMemory() as memory:  # each worker holds its projection's copy in memory
        took = timed(lambda: rebuild_in_processes(opener, groups, workers=workers, fresh=True, batch=batch,
                                                  progress=advance))
    progress.remove_task(task)
    peak = memory.peak_mb
    rows.append((f"{label}: rebuild --all in {workers} processes (groups balanced by events read, as the CLI does)",
                 f"{head / took:,.0f}", f"{raw_rate:,.0f} raw scan", f"{head / took / raw_rate:.0%}",
                 f">= 25% ({took:,.0f} s; largest worker {peak:,.0f} MB)"))
    # the audit chain over the first `audit_events` (sealing writes one row per event: slow)
    upto = min(head, audit_events)

    def raw(after: int, limit: int) -> list[Any]:
        return [r for r in log.raw(after, limit) if r.position <= upto] if after < upto else []

    with tempfile.TemporaryDirectory() as keys:
        keyring = Keyring(Path(keys))
        seal = upto / timed(lambda: Sealer(raw, seals, keyring).seal())
        checked = {}
        took = timed(lambda: checked.setdefault("report", verify(raw, seals, keyring)))
        assert checked["report"].ok and checked["report"].events == upto
    rows.append((f"{label}: audit seal ({upto:,} events)", f"{seal:,.0f}", f"{raw_rate:,.0f} raw scan",
                 f"{seal / raw_rate:.0%}", ""))
    rows.append((f"{label}: audit verify ({upto:,} events)", f"{upto / took:,.0f}", f"{raw_rate:,.0f} raw scan",
                 f"{upto / took / raw_rate:.0%}", ""))
    return rows


class PeakChildMemory:
    """The largest resident size any child process reached while the block
    ran, sampled every 0.1 s. (`getrusage(RUSAGE_CHILDREN)` would report this
    process's own size: a spawned worker is counted as big as its parent at
    the fork before its exec.)"""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.1):
            for child in me.children(recursive=True):
                try:
                    self.peak_mb = max(self.peak_mb, child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass  # (ended meanwhile)

    def __enter__(self) -> "PeakChildMemory":
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sampler.join()


def _close(log: ApplicationEventLog, targets: dict[str, Target]) -> None:
    next(iter(targets.values()))[1].close()  # one store for all
    log.app.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the PostgreSQL log")
    parser.add_argument("--sqlite-events", dest="sqlite_events", type=int, default=200_000,
                        help="events in the SQLite log (0: no SQLite rows)")
    parser.add_argument("--audit-events", type=int, default=50_000,
                        help="events sealed and verified (sealing writes one row per event)")
    parser.add_argument("--batch", type=int, default=5000, help="events per rebuild transaction")
    args = parser.parse_args()
    sqlite_events = args.sqlite_events
    admin = os.environ.get("ATTENDWISE_DATABASE_URL")
    if not admin:
        raise SystemExit("set ATTENDWISE_DATABASE_URL: eval \"$(attendwise services env)\"")
    admin = admin.rsplit("/", 1)[0] + "/postgres"

    rows: list[tuple[str, str, str, str, str]] = []
    with Progress(console=console, transient=True) as progress:
        with fresh_database(admin) as url:
            opener = functools.partial(opened, url, None)
            log, targets = opener()
            n = seed(log.app, args.events, progress, f"PostgreSQL ({args.events:,} events)")
            table = f"{_inner(log.app.recorder).datastore.schema}.{events_table(log.app)}"
            rows += measure(f"PostgreSQL, {n:,} events", opener, log, targets, postgres_seals(url),
                            lambda: raw_scan_pg(url, table), args.audit_events, args.batch, progress,
                            {"raw SQL scan in text format (psycopg's default; the baseline until 2026-11-28)":
                             lambda: raw_scan_pg(url, table, binary=False)})
            _close(log, targets)
        if sqlite_events:
            with tempfile.TemporaryDirectory() as d:
                folder = Path(d)
                opener = functools.partial(opened, None, folder)
                log, targets = opener()
                n = seed(log.app, sqlite_events, progress, f"SQLite ({sqlite_events:,} events)")
                rows += measure(f"SQLite, {n:,} events", opener, log, targets, sqlite_seals(folder / "audit.sqlite3"),
                                lambda: raw_scan_sqlite(folder / "events.sqlite3", events_table(log.app)),
                                args.audit_events, args.batch, progress)
                _close(log, targets)
    print_table("AttendWise rebuild and audit benchmark (events of the log per second, this machine)",
                ("measure", "events/s", "baseline (same run)", "ratio", "target"), rows)


if __name__ == "__main__":
    main()
