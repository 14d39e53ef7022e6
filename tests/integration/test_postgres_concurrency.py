"""Real threads against the real PostgreSQL: optimistic concurrency, group
commit, and tailing readers that must never miss an event."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.eventstore import ApplicationEventLog, GroupCommitRecorder, open_event_store
from commands.application import AttendWise
from commands.messages import CommandContext, RegisterUser
from domain.errors import ConcurrencyConflict


@pytest.fixture(params=[True, False], ids=["group-commit", "plain"])
def app(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Iterator[AttendWise]:
    a = open_event_store(pg_url, tmp_path / "unused.sqlite3", group_commit=request.param)
    assert isinstance(a.recorder, GroupCommitRecorder) == request.param
    yield a
    a.close()


def test_two_racing_commands_one_wins_one_conflicts(app: AttendWise) -> None:
    for round_ in range(10):
        uid = app.register_user(RegisterUser(f"r{round_}@example.org", "Start"), CommandContext())
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def rename(name: str) -> None:
            user = app.get_user(uid)  # both read version 1
            user.change_display_name(name)
            barrier.wait()
            try:
                app.save_stamped(CommandContext(), user)
                outcomes[name] = "ok"
            except ConcurrencyConflict as e:
                outcomes[name] = e

        threads = [threading.Thread(target=rename, args=(n,)) for n in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n, o in outcomes.items() if o == "ok"]
        losers = [o for o in outcomes.values() if isinstance(o, ConcurrencyConflict)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        user = app.get_user(uid)
        assert user.version == 2 and user.display_name == winners[0]


def test_a_conflict_in_a_batch_fails_only_its_own_command(app: AttendWise) -> None:
    """Eight writers at once, two of them registering the same email: exactly
    one of those two fails; the other seven commands are all recorded."""
    barrier = threading.Barrier(8)
    results: dict[int, object] = {}

    def register(i: int) -> None:
        email = "same@example.org" if i < 2 else f"w{i}@example.org"
        barrier.wait()
        try:
            results[i] = app.register_user(RegisterUser(email, f"W{i}"), CommandContext())
        except Exception as e:  # noqa: BLE001 - asserted below
            results[i] = e

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results.values() if isinstance(r, Exception)]
    assert len(failures) == 1 and getattr(failures[0], "code", None) == "EMAIL_TAKEN"
    assert ApplicationEventLog(app).head() and len(ApplicationEventLog(app).read(0, 100)) == 14


def test_a_tailing_reader_sees_every_event_under_eight_writers(app: AttendWise, pg_url: str) -> None:
    """The library locks the table so commit order equals position order; group
    commit must keep that: a reader following "position greater than last seen"
    and a projector following the log, while eight writers append, must each
    see every event exactly once."""
    from adapters.readmodels import PostgresReadModelStore
    from projections.projector import Projector
    from tests.unit.test_projection_replay import CountingProjection

    log = ApplicationEventLog(app)
    stop = threading.Event()
    seen: list[int] = []
    store = PostgresReadModelStore(pg_url)
    projector = Projector(CountingProjection(), store)
    following = threading.Thread(target=projector.follow, args=(log, lambda: stop.is_set() and projector.position == log.head()))
    following.start()

    def tail() -> None:
        at = 0
        while True:
            writers_done = stop.is_set()  # read before the page: an empty page read after it is final
            page = log.read(at, 500)
            if page:
                seen.extend(e.position for e in page)
                at = page[-1].position
            elif writers_done:
                return

    def write(w: int) -> None:
        for i in range(150):
            app.register_user(RegisterUser(f"{w}-{i}-{uuid.uuid4().hex[:6]}@example.org", "W"), CommandContext())

    reader = threading.Thread(target=tail)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    following.join(60)
    every = [e.position for e in log.read(0, 100_000)]
    assert len(every) == 8 * 150 * 2
    assert seen == every  # nothing missed, nothing twice, in order
    counts = store.rows("event_counts")
    assert len(counts) == 8 * 150 and all(r["events"] == 1 for r in counts)  # each registration once
    store.close()


def _start(url: str, q: "multiprocessing.Queue[str]") -> None:
    from adapters.readmodels import PostgresReadModelStore
    from projections.users import UsersProjection

    try:
        app = open_event_store(url, Path("/nonexistent"))
        store = PostgresReadModelStore(url)
        store.install(UsersProjection.tables)
        app.register_user(RegisterUser(f"{uuid.uuid4().hex}@example.org", "P"), CommandContext())
        q.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test
        q.put(repr(e))


def test_processes_starting_together_on_a_new_database_all_come_up(pg_url: str) -> None:
    """API, relay and projectors start at once on an empty database: schema
    creation must not race ("tuple concurrently updated")."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_start, args=(pg_url, q)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(q.get(timeout=5) for _ in procs) == ["ok"] * 6
