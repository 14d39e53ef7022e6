"""Notifier benchmark: emails per second through a real SMTP server with one
and with two `attendwise notify` processes, and the latency from an event's
commit to the email's arrival, on the full stack (PostgreSQL, JetStream, and
the relay, projector, API and notifiers as processes).

    python -m bench.notify [--messages 400] [--latency-messages 200] [--latency-rate 20]
                           [--notifiers 1,2] [--profile DIR]

The load is user registrations: each `UserRegistered` event causes exactly one
email (the address verification). They are registered in-process through the
application, without a password (`POST /users` would hash one with argon2id,
~0.3 s of CPU each on the bench machine, so the API could not outpace the
notifier), and reach the notifiers as every event does: event store -> relay
-> JetStream -> the notifiers' shared durable consumer.

Throughput (a fresh database and NATS namespace per notifier count): the N
registrations are committed and relayed to JetStream *before* the notifiers
start, so they wait as a backlog; then K notifiers start, and the rate is the
messages the sink received from the moment the last of them logged
`notifier_started` (start-up, imports and building the container excluded)
until the last message, divided by that time.

Latency (on the one-notifier stack, its notifier idle): users registered one
at a time at a steady rate; commit (the command returned) -> the sink received
the email, and commit -> the event seen on JetStream (the relay's share).

The baseline, measured in the same run against the same sink: aiosmtplib from
one separate process, one connection per message as the notifier does, the
same email bytes; concurrency 16 for throughput (and its CPU per message, set
against the notifiers' CPU per email, which holds even when other work on the
machine slows everything down), 1 for latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.report import CLOCK_TICKS, cpu_seconds, percentiles, print_table
from infra.smtp_sink import SmtpSink
from tests.processes import Proc, free_port, wait_http

console = Console(stderr=True)


class TimedSink(SmtpSink):
    """The SMTP sink, also keeping when each message arrived. aiosmtpd runs
    every handler on its one controller thread, so `times[i]` belongs to
    `messages()[i]`."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.times: list[float] = []

    def _receive(self, raw: bytes) -> str:
        t = time.time()
        answer = super()._receive(raw)
        if answer.startswith("250"):
            self.times.append(t)
        return answer

    def count(self) -> int:
        return len(self.times)




def machine_busy() -> float:
    """CPU seconds spent by every process on the machine so far (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS  # all but idle and iowait


def postgres_backends(database: str) -> set[int]:
    """The PostgreSQL server processes serving one database (same machine)."""
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                found.add(int(d.name))
    return found


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


# ---------------------------------------------------------------- the stack
class Stack:
    """Relay, projector and API as processes on a fresh database and NATS
    namespace; the application in-process to register users."""

    def __init__(self, name: str, database_url: str, nats_url: str, smtp_url: str, logs: Path) -> None:
        self.name, self.nats_url, self.logs = name, nats_url, logs
        self.server = database_url.rsplit("/", 1)[0]
        self.database_url = f"{self.server}/{name}"
        self.data = logs / "data"
        self.env = {"ATTENDWISE_DATA_DIR": str(self.data), "ATTENDWISE_DATABASE_URL": self.database_url,
                    "ATTENDWISE_NATS_URL": nats_url, "ATTENDWISE_NATS_NAMESPACE": name,
                    "ATTENDWISE_RATE_LIMITS": "false", "ATTENDWISE_LOG_LEVEL": "warning",
                    "ATTENDWISE_SMTP_URL": smtp_url}
        self.port = free_port()
        self.procs: dict[str, Proc] = {}
        self.notifiers: list[Proc] = []
        self.container = None

    def start(self) -> "Stack":
        import psycopg

        from api.bootstrap import build
        from api.settings import Settings

        with psycopg.connect(self.server + "/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        for args in (["relay"], ["project"], ["serve", "--port", str(self.port)]):
            self.procs[args[0]] = Proc(args, self.env, self.logs / f"{args[0]}.log").start()
        wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=60, proc=self.procs["serve"])
        self.container = build(Settings(data_dir=self.data, database_url=self.database_url, nats_url=None,
                                        neo4j_uri=None, s3_endpoint=None, redis_url=None))
        return self

    def start_notifiers(self, k: int) -> list[float]:
        """Starts k `attendwise notify` processes (log level info: their
        default, and how they say `notifier_started`); returns when each said
        it (the time in its log line)."""
        env = {**self.env, "ATTENDWISE_LOG_LEVEL": "info"}
        self.notifiers = [Proc(["notify"], env, self.logs / f"notify-{i}.log").start() for i in range(k)]
        started: dict[int, float] = {}
        restarts = 0
        deadline = time.monotonic() + 90
        while len(started) < k:
            for i, p in enumerate(self.notifiers):
                if i in started:
                    continue
                if p.p is not None and p.p.poll() is not None:
                    if restarts >= 2:
                        raise RuntimeError(f"notifier {i} exited: {p.log[-3000:]}")
                    restarts += 1  # e.g. its PostgreSQL pool timed out on a busy machine: before the measured span
                    console.print(f"[yellow]notifier {i} exited while starting, started again: "
                                  f"{p.log.strip().splitlines()[-1][:200] if p.log.strip() else ''}")
                    p.start()
                    continue
                for line in p.log.splitlines():
                    if '"notifier_started"' in line:
                        started[i] = dt.datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
            if time.monotonic() > deadline:
                raise TimeoutError("notifiers did not start within 90 s")
            time.sleep(0.02)
        return [started[i] for i in range(k)]

    def register(self, emails: list[str], threads: int = 4) -> dict[str, str]:
        """Registers one user per address (in-process, no password); returns user id -> address."""
        from commands.messages import CommandContext, RegisterUser

        app = self.container.app  # type: ignore[attr-defined]
        ids: dict[str, str] = {}
        stop = threading.Event()
        with progress() as bar:
            task = bar.add_task(f"{self.name}: registering (backlog)", total=len(emails))

            def work(part: list[str]) -> None:
                for e in part:
                    if stop.is_set():
                        return
                    ids[str(app.register_user(RegisterUser(e, e.split("@")[0]), CommandContext()))] = e
                    bar.advance(task)
            pool = [threading.Thread(target=work, args=(emails[i::threads],), daemon=True) for i in range(threads)]
            try:
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
            finally:  # ctrl-c: the threads stop after the registration in hand
                stop.set()
                for t in pool:
                    if t.is_alive():
                        t.join(10)
        return ids

    def wait_relayed(self, timeout: float = 120) -> None:
        """Until JetStream holds every event of the store (the relay caught up)."""
        from adapters.bus import JetStreamBus

        head = self.container.event_log.head()  # type: ignore[attr-defined]

        async def poll() -> None:
            bus = await JetStreamBus.connect(self.nats_url, namespace=self.name, create_stream=False)
            try:
                deadline = time.monotonic() + timeout
                while (await bus.last())[1] < head:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"relay did not publish up to position {head} within {timeout} s")
                    await asyncio.sleep(0.05)
            finally:
                await bus.close()
        asyncio.run(poll())

    def stop(self) -> None:
        import psycopg

        for p in [*self.notifiers, *self.procs.values()]:
            p.stop()
        if self.container is not None:
            self.container.close()  # type: ignore[attr-defined]
            self.container = None
        try:
            with psycopg.connect(self.server + "/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as e:
            console.print(f"[yellow]could not drop database {self.name}: {e}")
        troubles = [f"{n}: {p.log[-2000:]}" for n, p in {**self.procs, **{f"notify-{i}": p for i, p in
                                                                          enumerate(self.notifiers)}}.items()
                    if "Traceback" in p.log]
        if troubles:
            console.print("[red]a process logged a traceback:\n" + "\n".join(troubles))


@contextmanager
def stack(name: str, database_url: str, nats_url: str, smtp_url: str, logs: Path) -> Iterator[Stack]:
    s = Stack(name, database_url, nats_url, smtp_url, logs)
    try:
        yield s.start()
    finally:
        s.stop()


# ---------------------------------------------------------------- measures
def wait_for_sink(sink: TimedSink, start_index: int, n: int, what: str, timeout: float) -> int:
    with progress() as bar:
        task = bar.add_task(what, total=n)
        deadline = time.monotonic() + timeout
        while (got := sink.count() - start_index) < n and time.monotonic() < deadline:
            bar.update(task, completed=got)
            time.sleep(0.05)
    return sink.count() - start_index


def drain(s: Stack, sink: TimedSink, k: int, n: int, profile: Path | None) -> dict:
    """N registrations queued on JetStream, then k notifiers start: their
    delivery rate once all k run."""
    emails = [f"k{k}-{i}-{s.name}@example.org" for i in range(n)]
    s.register(emails)
    with console.status(f"{s.name}: relay publishing the backlog to JetStream"):
        s.wait_relayed()
    first = sink.count()
    spawned = time.time()
    started = s.start_notifiers(k)
    pids = [p.p.pid for p in s.notifiers if p.p is not None]
    others = {name: p.p.pid for name, p in s.procs.items() if p.p is not None}
    others["bench process (sink)"] = os.getpid()
    backends = postgres_backends(s.name)
    cpu0 = {pid: cpu_seconds(pid) for pid in [*pids, *others.values(), *backends]}
    machine0, snap0 = machine_busy(), time.time()
    spies = []
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if profile is not None:
        if spy is None:
            console.print("[yellow]py-spy not found: no profile")
        profile.mkdir(parents=True, exist_ok=True)
        spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                   "--output", str(profile / f"notify-k{k}-{i}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i, pid in enumerate(pids) if spy is not None]
    got = wait_for_sink(sink, first, n, f"{s.name}: {k} notifier(s) delivering", timeout=max(120.0, n / 2))
    backends |= postgres_backends(s.name)  # connections opened while draining count from 0
    cpu1 = {pid: cpu_seconds(pid) for pid in [*cpu0, *backends]}
    machine1, window = machine_busy(), time.time() - snap0
    ours = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1)
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
    times = sink.times[first:]
    mails = sink.messages()[first:]
    t0, t_end = max(started), max(times) if times else time.time()
    after = sum(1 for t in times if t >= t0)
    return {
        "k": k, "n": n, "got": got, "rate": after / (t_end - t0) if t_end > t0 else 0.0,
        "startup": min(started) - spawned, "before_all_started": got - after,
        "missing": len(set(emails) - {m["To"] for m in mails}),
        "repeats": sum(c - 1 for c in Counter(m["Message-ID"] for m in mails).values()),
        "cpu_notifiers": [(cpu1[p] - cpu0[p]) / window for p in pids],
        "cpu_others": {**{name: (cpu1[pid] - cpu0[pid]) / window for name, pid in others.items()},
                       "PostgreSQL backends": sum(cpu1[p] - cpu0.get(p, 0.0) for p in backends) / window},
        "cpu_rest": max(0.0, machine1 - machine0 - ours) / window,  # NATS, PostgreSQL's own, anything else running
        "template": mails[0] if mails else None,
    }


def latency(s: Stack, sink: TimedSink, n: int, rate: float) -> dict:
    """Users registered one at a time at `rate`/s with the notifier idle:
    commit -> on JetStream, commit -> the sink has the email."""
    from commands.messages import CommandContext, RegisterUser

    app = s.container.app  # type: ignore[attr-defined]
    on_stream: dict[str, float] = {}
    ready, stop = threading.Event(), threading.Event()

    def listen() -> None:  # a plain NATS subscriber sees what the relay publishes into the stream
        import nats

        async def run() -> None:
            nc = await nats.connect(s.nats_url)

            async def seen(msg: object) -> None:
                d = json.loads(msg.data)  # type: ignore[attr-defined]
                if d["event_type"] == "UserRegistered":
                    on_stream.setdefault(d["aggregate_id"], time.time())
            await nc.subscribe(f"{s.name}.attendwise.identity.>", cb=seen)
            await nc.flush()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await nc.drain()
        asyncio.run(run())
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(10)
    first = sink.count()
    committed: dict[str, tuple[str, float]] = {}  # email -> (user id, commit time)
    begin = time.monotonic()
    with progress() as bar:
        task = bar.add_task(f"{s.name}: registering at {rate:g}/s, one notifier idle", total=n)
        for i in range(n):
            pause = begin + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            email = f"lat-{i}-{s.name}@example.org"
            uid = app.register_user(RegisterUser(email, f"L{i}"), CommandContext())
            committed[email] = (str(uid), time.time())
            bar.advance(task)
    wait_for_sink(sink, first, n, f"{s.name}: last latency messages", timeout=60)
    time.sleep(0.2)
    stop.set()
    listener.join(5)
    arrived = {m["To"]: t for m, t in zip(sink.messages()[first:], sink.times[first:])}
    delivered = [arrived[e] - t for e, (_, t) in committed.items() if e in arrived]
    relayed = [on_stream[u] - t for e, (u, t) in committed.items() if u in on_stream]
    return {"delivered": delivered, "relayed": relayed, "n": n}


# ---------------------------------------------------------------- the baseline
async def _raw_send(url: str, template: Path, n: int, concurrency: int) -> dict:
    import aiosmtplib

    from infra.smtp_sink import parse

    host, port = url.removeprefix("smtp://").split(":")
    raw = template.read_bytes()
    sender = "no-reply@attendwise.localhost"

    def one(i: int, tag: str) -> tuple[str, bytes]:  # the same email, to another address
        mail = parse(raw)
        mail.replace_header("To", f"raw-{tag}-{i}@example.org")
        mail.replace_header("Message-ID", f"<{uuid.uuid4()}@attendwise>")
        return str(mail["To"]), mail.as_bytes()

    async def send(batch: list[tuple[str, bytes]], clients: int) -> tuple[float, list[float]]:
        queue = list(reversed(batch))
        latencies: list[float] = []

        async def client() -> None:
            while queue:
                to, data = queue.pop()
                t = time.perf_counter()
                await aiosmtplib.send(data, sender=sender, recipients=[to], hostname=host, port=int(port),
                                      start_tls=False, timeout=10)
                latencies.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - t, latencies

    _, alone = await send([one(i, "alone") for i in range(min(n, 200))], 1)
    batch = [one(i, "many") for i in range(n)]
    cpu = time.process_time()
    wall, _ = await send(batch, concurrency)
    return {"rate": n / wall, "alone": alone, "cpu": (time.process_time() - cpu) / n}


def raw_baseline(sink: TimedSink, template: EmailMessage, n: int, concurrency: int, logs: Path) -> dict:
    """aiosmtplib from a separate process (the sink keeps its own thread and GIL here)."""
    path = logs / "template.eml"
    path.write_bytes(template.as_bytes())
    with console.status(f"baseline: {n} messages straight to the sink with aiosmtplib"):
        out = subprocess.run([sys.executable, "-m", "bench.notify", "--raw-send", sink.url, "--template", str(path),
                              "--messages", str(n), "--concurrency", str(concurrency)],
                             capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"baseline sender failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main
def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify")
    parser.add_argument("--messages", type=int, default=400, help="emails per throughput run")
    parser.add_argument("--notifiers", default="1,2", help="notifier process counts, one fresh stack each")
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=20.0, help="registrations per second")
    parser.add_argument("--concurrency", type=int, default=16, help="baseline sender's concurrent connections")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles (raw collapsed stacks) of each notifier while it drains")
    parser.add_argument("--raw-send", default=None, help=argparse.SUPPRESS)  # the baseline's sender process
    parser.add_argument("--template", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_send:
        print(json.dumps(asyncio.run(_raw_send(args.raw_send, args.template, args.messages, args.concurrency))))
        return
    database_url, nats_url = os.environ.get("ATTENDWISE_DATABASE_URL"), os.environ.get("ATTENDWISE_NATS_URL")
    if not (database_url and nats_url):
        raise SystemExit("the full stack is needed: eval \"$(attendwise services env)\" first")
    signal.signal(signal.SIGTERM, _interrupt)  # like ctrl-c: every process and database is cleaned up
    counts = [int(k) for k in args.notifiers.split(",")]
    runs: list[dict] = []
    lat: dict | None = None
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp, TimedSink() as sink:
        for k in counts:
            logs = Path(tmp) / f"k{k}"
            logs.mkdir()
            with stack(f"bench_notify_{run_id}_k{k}", database_url, nats_url, sink.url, logs) as s:
                runs.append(drain(s, sink, k, args.messages, args.profile))
                if lat is None and k == 1 and args.latency_messages:
                    lat = latency(s, sink, args.latency_messages, args.latency_rate)
        template = next((r["template"] for r in runs if r["template"] is not None), None)
        if template is None:
            raise SystemExit("no message reached the sink")
        base = raw_baseline(sink, template, args.messages, args.concurrency, Path(tmp))
    print_table(*table(args, runs, lat, base))
    for r in runs:
        others = ", ".join(f"{name} {c:.0%}" for name, c in r["cpu_others"].items())
        console.print(f"{r['k']} notifier(s): start-up {r['startup']:.1f} s (excluded), {r['before_all_started']} "
                      f"message(s) sent before the last one started; CPU while draining: notifier(s) "
                      f"{' + '.join(f'{c:.0%}' for c in r['cpu_notifiers'])} of a core, {others}; everything else "
                      f"on the machine {r['cpu_rest']:.0%} (all {os.cpu_count()} cores: {os.cpu_count():.0%})")


def table(args: argparse.Namespace, runs: list[dict], lat: dict | None, base: dict) -> tuple:
    b50, b99 = percentiles(base["alone"], 50, 99)
    raw = f"{base['rate']:,.0f}/s raw aiosmtplib, {args.concurrency} at once"
    rows = []
    for r in runs:
        note = "" if r["got"] == r["n"] and not r["missing"] else f"only {r['got']} of {r['n']} arrived"
        note += f"{'; ' if note else ''}{r['repeats']} resent" if r["repeats"] else ""
        label = f"emails/s, {r['k']} notifier{'s' if r['k'] > 1 else ''} ({r['n']} queued)"
        rows.append((label, f"{r['rate']:,.0f}", raw, f"{r['rate'] / base['rate']:.0%}", note))
    by_k = {r["k"]: r["rate"] for r in runs}
    if 1 in by_k and 2 in by_k and by_k[1]:
        rows.append(("2 notifiers vs 1", f"{by_k[2] / by_k[1]:.2f}x", "2.00x would be linear", "", ""))
    for r in runs:  # still meaningful when other work on the machine takes CPU away from the stack
        per = sum(r["cpu_notifiers"]) / r["rate"] if r["rate"] else 0.0
        rows.append((f"notifier CPU per email, {r['k']} notifier{'s' if r['k'] > 1 else ''}", f"{per * 1000:.1f} ms",
                     f"{base['cpu'] * 1000:.2f} ms raw sender CPU per message", f"{per / base['cpu']:.0f}x", ""))
    if lat:
        d50, d99 = percentiles(lat["delivered"], 50, 99)
        rows.append((f"commit -> email received p50 / p99 ms ({args.latency_rate:g}/s)",
                     f"{d50 * 1000:.0f} / {d99 * 1000:.0f}",
                     f"{b50 * 1000:.1f} / {b99 * 1000:.1f} ms one raw send alone", f"{d50 / b50:.0f}x",
                     f"{len(lat['delivered'])} of {lat['n']} arrived"))
        if len(lat["relayed"]) > 1:
            r50, r99 = percentiles(lat["relayed"], 50, 99)
            rows.append(("  of which commit -> on JetStream (relay)",
                         f"{r50 * 1000:.0f} / {r99 * 1000:.0f}", "", "", ""))
    title = f"Notifier benchmark (full stack, SMTP sink on loopback, {os.cpu_count()} cores)"
    return title, ("measure", "result", "baseline (same run)", "ratio", "note"), rows


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: processes stopped, databases dropped")
        sys.exit(130)
