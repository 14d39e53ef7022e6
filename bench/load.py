"""Load: a realistic mix against the full stack for minutes, watching for
errors, latency and memory growth (issue #10).

    python -m bench.load [--duration 300] [--users 20] [--members 36] [--face-share 0.1] [--watch 10]

The full stack runs as separate processes on services of its own
(tests/faults/stack.py, the module the fault-injection tests use: its own
PostgreSQL, nats-server and Neo4j; the shared S3 API when
ATTENDWISE_S3_ENDPOINT is set; an SMTP sink in this process): API, relay,
read-model projector, graph projector, notifier and a face worker.

After seeding (a host, `--members` members registered over HTTP, a public
community they all joined, QR sessions and a face session with places),
`--users` people use it at once, each a thread in a closed loop (no pause):
- 60% browse the feed: the GraphQL home feed (Neo4j);
- 10% post in the community;
- 20% check in: the member fetches a fresh ticket, the host's kiosk scans
  it (in, then out, then in...); `--face-share` of them at the face session
  with a photo (../shared/faces), verified by the face worker;
- 10% watch a live dashboard (WebSocket) as hosts do: open it, get the
  snapshot, take the changes for `--watch` seconds, open it again.
(Each of the first three picks its operation by those weights at every
iteration, so the request mix holds whatever their speeds.)

Reported: requests per second (all, and per operation), p50/p99 per
operation, errors (any answer other than a 2xx, and none is expected), the
delay from a check-in's answer to its change on a watching dashboard, and the
resident memory of each process, sampled every 10 s, with the projections'
lag behind the log beside it (so growth that follows a backlog can be told
from a leak). Growth over 10% is flagged, from the start of the steady load
(the median of the samples of the second minute: the first is warm-up, in
which pools open their connections and caches, queues and Go's and Python's
heaps reach their working size) to the end (the median of the last minute's
samples: one sample can land on either side of a garbage collection).
PostgreSQL's buffer cache is shown apart and not flagged: it is its shared
memory segment, sized at start (`shared_buffers`), whose pages become resident
as the growing log and read models are first cached in them. Memory after
seeding is shown too. The tables are printed (rich) and appended to
bench/results/load.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.report import percentiles, print_table
from tests.faults.stack import FullStack
from tests.faults.workload import FACES, Answer, Client, Ledger, Workload, World

RESULTS = Path(__file__).resolve().parent / "results" / "load.md"
MIX = {"feed": 60, "post": 10, "check-in": 20}  # the people sending requests; 10% more watch dashboards
WATCHING = 0.10
GROWTH = 0.10  # flagged above this
Sample = tuple[float, str, str, dict[str, int]]  # (after s, log head and database size, worst lag, memory)
MEMORY_COLUMNS = ("process", "after seeding", "start (2nd minute)", "end (last minute)", "growth", "")
SAMPLE_EVERY = 10.0  # seconds between memory samples
WARM_UP = 60.0  # seconds of load before "start": pools at working size, caches and heaps in use
BOUNDED = {"postgres buffer cache": "bounded: shared_buffers, sized at start, fills as data is cached"}


class Load:
    """The people: `Workload` clients (tests/faults/workload.py) sending the
    request mix without pause, and dashboard watchers."""

    def __init__(self, world: World, ledger: Ledger, args: argparse.Namespace, stack: FullStack) -> None:
        self.world, self.ledger, self.args, self.stack = world, ledger, args, stack
        self.stop = threading.Event()
        self.samples: list[Sample] = []
        self.seen: dict[str, float] = {}  # check-in id -> when a dashboard first showed it
        self.changes = 0
        self._lock = threading.Lock()

    def run(self) -> float:
        watchers = max(1, round(self.args.users * WATCHING))
        face = round(MIX["check-in"] * self.args.face_share)
        mix = {**MIX, "check-in": MIX["check-in"] - face, "face check-in": face}
        clients = Workload(self.world, self.ledger, threads=self.args.users - watchers, mix=mix, think=0.0)
        threads = [threading.Thread(target=self._watcher, args=(i,), daemon=True) for i in range(watchers)]
        threads.append(threading.Thread(target=self._sample, daemon=True))
        started = time.monotonic()
        clients.start()
        for t in threads:
            t.start()
        self.stop.wait(self.args.duration)
        self.stop.set()
        clients.stop()
        for t in threads:
            t.join(60)
        if clients.errors:
            raise clients.errors[0]
        return time.monotonic() - started

    def _sample(self) -> None:
        """Memory and the projections' lag behind the log, every SAMPLE_EVERY seconds."""
        import psycopg

        started = time.monotonic()
        with self.stack.container() as c, psycopg.connect(self.stack.postgres.url(), autocommit=True) as db:
            while not self.stop.wait(SAMPLE_EVERY):
                head = c.event_log.head()
                behind = {name: head - p.position for name, p in c.projectors.items()}
                worst = max(behind, key=behind.__getitem__)
                size = db.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
                self.samples.append((time.monotonic() - started, f"{head:,} ({size / 2**20:,.0f} MB)",
                                     f"{behind[worst]} ({worst})", self.stack.rss()))

    def _watcher(self, i: int) -> None:
        rng = random.Random(1000 + i)
        while not self.stop.is_set():
            self._watch(rng.choice(self.world.qr_sessions))

    def _watch(self, session: str) -> None:
        """A host's dashboard: connect, snapshot, changes for `--watch` seconds."""
        from websockets.sync.client import connect

        token = self.world.host.auth["Authorization"][7:]
        url = self.world.url.replace("http", "ws", 1) + f"/sessions/{session}/live?access_token={token}"
        started = time.monotonic()
        try:
            with connect(url, open_timeout=10, close_timeout=2) as ws:
                first = json.loads(ws.recv(timeout=10))
                if first.get("type") != "snapshot":
                    raise RuntimeError(f"first message {first}")
                snapshot = time.monotonic() - started
                self.ledger.answer(Answer("dashboard", "ok", 101, snapshot, time.time()))
                until = time.monotonic() + self.args.watch
                while time.monotonic() < until and not self.stop.is_set():
                    try:
                        msg = json.loads(ws.recv(timeout=max(0.05, until - time.monotonic())))
                    except TimeoutError:
                        break
                    if msg.get("type") == "change" and msg.get("checkin_id"):
                        with self._lock:
                            self.changes += 1
                            self.seen.setdefault(msg["checkin_id"], time.time())
        except Exception as e:  # noqa: BLE001 - counted as an error
            self.ledger.answer(Answer("dashboard", f"error {type(e).__name__}", None, time.monotonic() - started,
                                      time.time()), str(e))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--users", type=int, default=20, help="people at once (threads in closed loops); "
                        "10%% of them watch dashboards")
    parser.add_argument("--members", type=int, default=36, help="members registered (over HTTP) before the load")
    parser.add_argument("--face-share", type=float, default=0.1, help="share of check-ins by face")
    parser.add_argument("--watch", type=float, default=10.0, help="seconds a dashboard stays open")
    args = parser.parse_args()
    faces = (FACES / "img62.jpg").exists() and args.face_share > 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="attendwise-load-") as folder:
        stack = FullStack(Path(folder), notifiers=1, face_workers=1 if faces else 0)
        with stack:
            ledger = Ledger()
            clients = args.users - max(1, round(args.users * WATCHING))
            world = World.seed(stack.url, members=max(args.members, clients), qr_sessions=4,
                               face_members=clients if faces else 0, ledger=Ledger(),  # one per client
                               enrol=(lambda ids: stack.enrol_faces(ids, FACES / "img62.jpg")) if faces else None)
            load = Load(world, ledger, args, stack)
            _warm_up(world)
            rss_start, pg_start = stack.rss(), len(stack.pids().get("postgres", []))
            print(f"seeded: {len(world.members)} members; load for {args.duration:.0f} s by {args.users} users",
                  flush=True)
            seconds = load.run()
            rss_end, pg_end = stack.rss(), len(stack.pids().get("postgres", []))
    load_after = os.getloadavg()
    rows, memory, summary = _tables(load, ledger, seconds, rss_start, rss_end, (pg_start, pg_end))
    title = (f"Load: {seconds:.0f} s, {args.users} users: feed 60% / post 10% / check-in 20% "
             f"({args.face_share:.0%} of them by face) / dashboard watchers 10%")
    print_table(title, ("operation", "requests", "per second", "p50 ms", "p99 ms", "errors"), rows)
    print_table("Resident memory per process (MB): growth from the start of the steady load to the end",
                MEMORY_COLUMNS, memory)
    minutes = _each_minute(load.samples)
    over_time = _over_time(minutes, rss_start)
    print_table("Over the run: the log, the worst projection's lag (events), memory (MB)",
                ("after s", *(f"{at:.0f}" for at, *_ in minutes)), over_time)
    print(summary)
    _append(title, rows, memory, over_time, [f"{at:.0f}" for at, *_ in minutes], summary, args, load_before,
            load_after)


def _over_time(samples: list[Sample],
               names: dict[str, int]) -> list[tuple[str, ...]]:
    """One row per measure, one column per sample."""
    rows = [("log head (the database's size)", *(head for _, head, _, _ in samples)),
            ("worst lag", *(lag for _, _, lag, _ in samples))]
    rows += [(name, *(f"{rss.get(name, 0) / 2**20:,.0f}" for *_, rss in samples)) for name in names]
    return rows


def _each_minute(samples: list[Sample]) -> list[Sample]:
    """The samples a minute apart (the over-time table's columns)."""
    out: list[Sample] = []
    for sample in samples:
        if not out or sample[0] - out[-1][0] >= 60.0 - SAMPLE_EVERY / 2:
            out.append(sample)
    return out


def _steady_windows(samples: list[Sample],
                    seconds: float) -> tuple[dict[str, int], dict[str, int]]:
    """(start, end): each process's median memory over the minute after the
    warm-up, and over the last minute (shorter runs: their first and last
    thirds after a third of warm-up)."""
    warm = min(WARM_UP, seconds / 3)
    span = min(60.0, seconds / 3)

    def median(lo: float, hi: float) -> dict[str, int]:
        window = [rss for at, _, _, rss in samples if lo <= at < hi]
        names = {name for rss in window for name in rss}
        return {name: int(statistics.median(rss.get(name, 0) for rss in window)) for name in names}

    return median(warm, warm + span), median(seconds - span, seconds + SAMPLE_EVERY)


def _warm_up(world: World) -> None:
    """One of each operation before memory is measured (imports, caches, connections)."""
    client = Client(world.url, Ledger(), "warm-up")
    m = world.members[0]
    client.feed(m)
    client.post(m, world.community)
    client.check_in(world, m, world.qr_sessions[0], "in", False)
    client.close()


def _tables(load: Load, ledger: Ledger, seconds: float, rss_start: dict[str, int], rss_end: dict[str, int],
            pg_processes: tuple[int, int]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], str]:
    """`pg_processes`: PostgreSQL's processes at the start and the end (one
    per connection, besides its own): the pools open more under load."""
    by_op: dict[str, list] = defaultdict(list)
    for a in ledger.answers:
        by_op[a.op].append(a)
    rows = []
    total = errors_total = 0
    for op in ("feed", "post", "ticket", "check-in", "face check-in", "dashboard"):
        answers = by_op.get(op, [])
        if not answers:
            continue
        errors = [a for a in answers if a.outcome != "ok"]
        p50, p99 = percentiles([a.seconds for a in answers], 50, 99)
        total += len(answers)
        errors_total += len(errors)
        label = "dashboard (WebSocket open -> snapshot)" if op == "dashboard" else op
        rows.append((label, f"{len(answers):,}", f"{len(answers) / seconds:,.1f}", f"{p50 * 1000:.0f}",
                     f"{p99 * 1000:.0f}", str(len(errors)) + (f" ({Counter(a.outcome for a in errors).most_common(2)})"
                                                            if errors else "")))
    delays = [load.seen[c["id"]] - c["at"] for c in ledger.accepted.get("checkin", []) if c["id"] in load.seen]
    d50, d99 = percentiles(delays, 50, 99)
    rows.append(("all requests", f"{total:,}", f"{total / seconds:,.1f}", "", "", str(errors_total)))
    rows.append(("check-in answered -> on a watching dashboard", f"{len(delays):,} seen", "", f"{d50 * 1000:.0f}",
                 f"{d99 * 1000:.0f}", ""))
    memory = []
    steady, end = _steady_windows(load.samples, seconds)
    for name in rss_start:
        a, b = steady.get(name, rss_start[name]), end.get(name, rss_end.get(name, 0))
        growth = (b - a) / a if a else 0.0
        label = name + (f" (PSS, its {pg_processes[0]} -> {pg_processes[1]} processes' own memory)"
                        if name == "postgres" else "")
        flag = BOUNDED.get(name) or ("GREW > 10%" if growth > GROWTH else "")
        memory.append((label, f"{rss_start[name] / 2**20:,.0f}", f"{a / 2**20:,.0f}", f"{b / 2**20:,.0f}",
                       f"{growth:+.1%}", flag))
    summary = (f"errors: {errors_total}; {load.changes} dashboard changes received; "
               f"{sum(1 for r in memory if r[5].startswith('GREW'))} process(es) grew more than {GROWTH:.0%} in the steady load")
    if ledger.examples:
        summary += "\nfirst answer of each kind other than a success: " + "; ".join(
            f"{k}: {' '.join(v.split())[:160]}" for k, v in list(ledger.examples.items())[:5])
    return rows, memory, summary


def _append(title: str, rows: list[tuple[str, ...]], memory: list[tuple[str, ...]], over_time: list[tuple[str, ...]],
            labels: list[str], summary: str, args: argparse.Namespace, load_before: tuple[float, ...],
            load_after: tuple[float, ...]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Load runs\n\nAppended by `python -m bench.load` (bench/load.py), newest last.\n")
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        f.write(f"\n## {when}: {title}\n\n")
        options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items())
        f.write(f"{os.cpu_count()} cores; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
                f"(the machine is shared: other work ran meanwhile). `python -m bench.load {options}`\n\n")
        f.write("| operation | requests | per second | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
        f.write("\n| " + " | ".join(MEMORY_COLUMNS) + " |\n|" + "---|" * len(MEMORY_COLUMNS) + "\n")
        for r in memory:
            f.write("| " + " | ".join(r) + " |\n")
        f.write("\nOver the run: the log, the worst projection's lag behind it (events), memory (MB):\n\n")
        f.write("| after s | " + " | ".join(labels) + " |\n|" + "---|" * (1 + len(labels)) + "\n")
        for r in over_time:
            f.write("| " + " | ".join(r) + " |\n")
        f.write(f"\n{summary}\n")


if __name__ == "__main__":
    main()
