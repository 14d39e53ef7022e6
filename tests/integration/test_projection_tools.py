"""The analysts' and operators' projection tools, on SQLite and PostgreSQL:
`projections status` shows a projector's last error until it gets past it,
`projections verify` finds rows changed behind the projector's back (and
nothing on a healthy projection, even while it moves), `export` writes
Parquet and CSV with the log position they reflect, a rebuild resumes, and
a new projection is backfilled from the whole history while the system runs
(what docs/PROJECTIONS.md tells you to do)."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from adapters.export import export_projection, read_position
from adapters.readmodels import ReadModelTx, Table
from api.bootstrap import Container, build
from api.cli import main
from api.settings import Settings
from commands.messages import ChangeDisplayName, CommandContext, RegisterUser
from domain.envelope import EventEnvelope
from domain.errors import ConcurrencyConflict
from projections.projector import Projector
from projections.rebuild import rebuild
from projections.users import UsersProjection
from projections.verify import verify

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Only the settings this test chooses: embedded files, plus PostgreSQL
    for the read models and the log when the store is PostgreSQL."""
    import os

    for k in [k for k in os.environ if k.startswith("ATTENDWISE_")]:
        monkeypatch.delenv(k)
    values = {"ATTENDWISE_DATA_DIR": str(tmp_path / "data"), "ATTENDWISE_LOG_LEVEL": "error"}
    if request.param == "postgres":
        values["ATTENDWISE_DATABASE_URL"] = request.getfixturevalue("pg_url")
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def system(env: dict[str, str]) -> Iterator[Container]:
    c = build(Settings())
    yield c
    c.close()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`attendwise ARGS` in this process (the settings from `env`)."""
    import structlog

    capsys.readouterr()
    try:
        rc = main(list(args))
    finally:
        structlog.reset_defaults()  # main() points the log at this test's captured stderr
    out = capsys.readouterr()
    return rc, out.out + out.err


def register(c: Container, n: int) -> list[uuid.UUID]:
    return [c.app.register_user(RegisterUser(f"{uuid.uuid4().hex}@example.org", f"Person {i}",
                                             time_zone=random.choice(ZONES)), CommandContext()) for i in range(n)]


def sql(c: Container, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Changes the read-model database behind the projector's back."""
    if c.settings.database_url:
        import psycopg

        with psycopg.connect(c.settings.database_url, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s"), params)
    else:
        import sqlite3

        conn = sqlite3.connect(c.settings.readmodels_path, isolation_level=None, timeout=30)
        conn.execute(statement, params)
        conn.close()


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Running:
    """Threads that keep the system busy: writers appending events and live
    projectors following the log (as an embedded `serve` does)."""

    def __init__(self, c: Container, ids: list[uuid.UUID], projectors: list[Projector], writers: int = 1) -> None:
        self.c, self.ids = c, ids
        self.writing, self.following = threading.Event(), threading.Event()
        self.writing.set()
        self.following.set()
        self.threads = [threading.Thread(target=self._write, args=(i,)) for i in range(writers)]
        self.followers = [threading.Thread(target=p.follow, args=(c.event_log, lambda: not self.following.is_set()),
                                           kwargs={"pause": 0.05}) for p in projectors]
        self.projectors = projectors
        for t in self.threads + self.followers:
            t.start()

    def _write(self, seed: int) -> None:
        rng = random.Random(seed)
        while self.writing.is_set():
            dice, who = rng.random(), rng.choice(self.ids)
            try:
                if dice < 0.4:
                    self.ids += register(self.c, 1)
                elif dice < 0.7:
                    self.c.app.change_display_name(ChangeDisplayName(who, f"Name {rng.random():.6f}"),
                                                   CommandContext())
                else:
                    self.c.app.update_profile(CommandContext.for_user(who), None, rng.choice(ZONES))
            except ConcurrencyConflict:  # two writers changed one person at once: one of them won
                pass

    def stop_writing(self) -> None:
        self.writing.clear()
        for t in self.threads:
            t.join()

    def stop(self) -> None:
        self.stop_writing()
        head = self.c.event_log.head()
        for p in self.projectors:
            wait_for(lambda: p.position >= head)  # noqa: B023
        self.following.clear()
        for t in self.followers:
            t.join()


# ---------------------------------------------------------------- status
def test_status_shows_the_last_error_until_the_projection_moves_past_it(
        system: Container, capsys: pytest.CaptureFixture[str]) -> None:
    register(system, 5)
    users = system.projectors["users"]
    users.catch_up(system.event_log)
    stuck_at = users.position
    sql(system, "ALTER TABLE rm_users RENAME COLUMN display_name TO shown_name")  # e.g. an operator's mistake
    register(system, 2)
    stop = threading.Event()
    follower = threading.Thread(target=users.follow, args=(system.event_log, stop.is_set), kwargs={"pause": 0.05})
    follower.start()
    try:
        wait_for(lambda: "users" in system.readmodels.errors() and system.readmodels.errors()["users"].attempts >= 2)
        rc, out = cli(capsys, "projections", "status")
        line = next(x for x in out.splitlines() if x.startswith("users "))
        assert rc == 0
        assert line.split()[1:3] == [str(stuck_at), str(system.event_log.head() - stuck_at)]
        assert "display_name" in line and "attempts since" in line  # the error text, retried, with its times
        error = system.readmodels.errors()["users"]
        assert error.position == stuck_at and error.first_at <= error.last_at

        sql(system, "ALTER TABLE rm_users RENAME COLUMN shown_name TO display_name")  # repaired: it moves on
        head = system.event_log.head()
        wait_for(lambda: users.position == head)
        rc, out = cli(capsys, "projections", "status")
        line = next(x for x in out.splitlines() if x.startswith("users "))
        assert line.split()[1:] == [str(head), "0"]  # no error any more
        assert "users" not in system.readmodels.errors()
    finally:
        stop.set()
        follower.join()


def test_an_error_the_projection_already_moved_past_is_not_recorded(system: Container) -> None:
    register(system, 3)
    users = system.projectors["users"]
    users.catch_up(system.event_log)
    system.readmodels.record_error("users", users.position - 1, "RuntimeError: late news")
    assert system.readmodels.errors() == {}
    system.readmodels.record_error("users", users.position, "RuntimeError: now")
    system.readmodels.record_error("users", users.position, "RuntimeError: again")
    assert system.readmodels.errors()["users"].attempts == 2
    assert system.readmodels.errors()["users"].error == "RuntimeError: again"


# ---------------------------------------------------------------- verify
def test_verify_finds_nothing_on_a_healthy_projection_while_it_moves(system: Container) -> None:
    ids = register(system, 60)
    users = system.projectors["users"]
    users.catch_up(system.event_log)
    busy = Running(system, ids, [users], writers=2)
    try:
        time.sleep(0.2)
        result = verify(users.projection, users.store, system.event_log, batch=7)  # many batches, live moving
        assert result.ok, [str(d) for d in result.differences[:5]]
        assert result.position > 120  # compared at the live position, not at 0 nor at a stale one
    finally:
        busy.stop()
    assert verify(users.projection, users.store, system.event_log).ok

    def live_moves_on(position: int, target: int) -> None:  # after every batch of the replay
        register(system, 1)
        users.catch_up(system.event_log)

    result = verify(users.projection, users.store, system.event_log, batch=5, progress=live_moves_on)
    assert result.ok, [str(d) for d in result.differences[:5]]
    assert result.position == users.position == system.event_log.head()


def test_verify_reports_tampered_rows_with_their_keys(system: Container, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [str(i) for i in register(system, 10)]
    users = system.projectors["users"]
    users.catch_up(system.event_log)
    sql(system, "UPDATE rm_users SET display_name = ?, version = ? WHERE id = ?", ("Mallory", 9, ids[3]))
    sql(system, "DELETE FROM rm_users WHERE id = ?", (ids[5],))
    sql(system, "INSERT INTO rm_users (id, email) VALUES (?, ?)", ("not-a-user", "x@example.org"))

    result = verify(users.projection, users.store, system.event_log)
    found = {(d.key, d.kind): d for d in result.differences}
    assert set(found) == {(ids[3], "differs"), (ids[5], "missing"), ("not-a-user", "extra")}
    changed = found[(ids[3], "differs")]
    assert changed.columns == ("display_name", "version")
    assert changed.live["display_name"] == "Mallory" and changed.rebuilt["display_name"] == "Person 3"
    assert result.position == users.position

    rc, out = cli(capsys, "projections", "verify", "users")
    assert rc == 1
    assert f"users {ids[3]}: differs (display_name: live 'Mallory', rebuilt 'Person 3'" in out
    assert f"users {ids[5]}: missing" in out and "users not-a-user: extra" in out
    # verify changes nothing live and leaves no copy behind
    assert users.store.get("users", ids[3])["display_name"] == "Mallory"
    assert users.store.position("users__verify") == 0
    with pytest.raises(Exception):
        sql(system, "SELECT 1 FROM rm_users__verify")

    rc, out = cli(capsys, "rebuild", "users")
    assert rc == 0
    rc, out = cli(capsys, "projections", "verify", "users")
    assert rc == 0 and f"users: no differences at position {users.position}" in out


# ---------------------------------------------------------------- export
KINDS = Table("kinds", columns=(("id", "text"), ("n", "int"), ("x", "float"), ("ok", "bool"), ("tags", "json"),
                                ("note", "text")))


class KindsProjection:
    """Every column kind, nulls and empty strings: what an export must keep apart."""

    name = "kinds"
    tables = (KINDS,)
    event_types = frozenset({"UserRegistered"})

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        i = e.position
        tx.upsert("kinds", {"id": e.aggregate_id, "n": i if i % 3 else None, "x": i / 7, "ok": i % 2 == 0,
                            "tags": {"at": i, "list": [1, "two", None]} if i % 4 else None,
                            "note": "" if i % 5 == 0 else (None if i % 5 == 1 else f'say "hi", {i}\nbye')})


def read_back(path: Path, t: Table) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        import pyarrow as pa

        types = {"text": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "json": pa.string()}
        rows = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: types[k] for c, k in t.columns}, strings_can_be_null=True,
            quoted_strings_can_be_null=False)).to_pylist()
    for r in rows:
        for c, kind in t.columns:
            if kind == "json" and r[c] is not None:
                r[c] = json.loads(r[c])
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_round_trips_rows_and_position(system: Container, tmp_path: Path, fmt: str) -> None:
    register(system, 40)
    kinds = Projector(KindsProjection(), system.readmodels)
    kinds.catch_up(system.event_log)
    done = export_projection(system.readmodels, "kinds", KindsProjection.tables, fmt, tmp_path / "out")
    path = tmp_path / "out" / f"kinds.{fmt}"
    assert done.position == kinds.position == read_position(path) and done.tables[0].rows == 40
    assert read_back(path, KINDS) == system.readmodels.rows("kinds", order_by="id")
    if fmt == "parquet":
        meta = pq.read_schema(path).metadata
        assert meta[b"attendwise.position"] == str(done.position).encode()
        assert meta[b"attendwise.projection"] == b"kinds" and meta[b"attendwise.key"] == b"id"
    assert not list((tmp_path / "out").glob("*.partial"))


def test_export_is_one_snapshot_while_the_projection_moves(system: Container, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ids = register(system, 30)
    users = system.projectors["users"]
    busy = Running(system, ids, [users], writers=2)
    try:
        for round_ in range(3):
            time.sleep(0.1)
            rc, out = cli(capsys, "export", "users", "--format", "parquet", "--out", str(tmp_path / str(round_)))
            assert rc == 0, out
            path = tmp_path / str(round_) / "users.parquet"
            position = read_position(path)
            assert f"exported at log position {position}" in out
            # exactly the users registered up to that position, nothing later
            registered = [e for e in system.event_log.read(0, 1_000_000) if e.event_type == "UserRegistered"
                          and e.position <= position]
            table = pq.read_table(path)
            assert sorted(table.column("id").to_pylist()) == sorted(e.aggregate_id for e in registered)
            assert table.schema.metadata[b"attendwise.position"] == str(position).encode()
    finally:
        busy.stop()


# ---------------------------------------------------------------- rebuild
def test_an_interrupted_rebuild_resumes_and_swaps_in(system: Container, capsys: pytest.CaptureFixture[str]) -> None:
    register(system, 30)
    users = system.projectors["users"]

    class Interrupt(Exception):
        pass

    def stop_after_two(pos: int, head: int) -> None:
        calls.append(pos)
        if len(calls) == 2:  # two batches committed
            raise Interrupt

    calls: list[int] = []
    with pytest.raises(Interrupt):  # (its copy written after every batch: by default, every minute)
        rebuild(users.projection, users.store, system.event_log, batch=10, progress=stop_after_two, write_every=0)
    assert users.store.position("users__next") == 20 and users.position == 0  # nothing swapped in yet
    assert users.store.rows("users") == []

    rc, out = cli(capsys, "rebuild", "users")
    assert rc == 0, out
    assert "resumed at 20" in out and "events/s" in out and "users: rebuilt to position 60" in out
    assert users.position == 60 and len(users.store.rows("users")) == 30
    assert verify(users.projection, users.store, system.event_log).ok


def test_rebuild_all_on_several_cores_swaps_each_in_as_one_process_would(
        system: Container, capsys: pytest.CaptureFixture[str]) -> None:
    """`rebuild --all --workers 2`: a process per projection, each swapped
    in at the head, with rows equal to a clean rebuild (what `projections
    verify` compares) and a bar of its own."""
    ids = register(system, 40)
    for uid in ids[:15]:
        system.app.change_display_name(ChangeDisplayName(uid, "Renamed"), CommandContext())
    head = system.event_log.head()
    rc, out = cli(capsys, "rebuild", "--all", "--workers", "2")
    assert rc == 0, out
    names = list(system.projectors)
    for name in names:
        assert f"{name}: rebuilt to position {head}, swapped in" in out
        assert system.projectors[name].store.position(name) == head
    assert {r["display_name"] for r in system.readmodels.rows("users") if r["id"] in map(str, ids[:15])} == {"Renamed"}
    for name in names:
        rc, checked = cli(capsys, "projections", "verify", name)
        assert rc == 0, checked


class Refuses:
    """A projection that fails at every change of display name."""

    name = "refuses"
    tables = (Table("refused", columns=(("id", "text"),)),)
    event_types = frozenset({"UserDisplayNameChanged"})

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        raise ValueError("no display names here")


def with_a_failing_projection(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """A rebuild worker's opener (picklable): the catalogue's, and `Refuses`."""
    from api.bootstrap import rebuild_targets

    log, targets = rebuild_targets(settings)
    targets["refuses"] = (Refuses(), targets["users"][1])
    return log, targets


def test_a_projection_failing_in_its_process_fails_the_rebuild_and_the_others_swap_in(system: Container) -> None:
    import functools

    from projections.rebuild import rebuild_in_processes

    uid = register(system, 20)[0]
    system.app.change_display_name(ChangeDisplayName(uid, "Renamed"), CommandContext())
    head = system.event_log.head()
    with pytest.raises(ValueError, match="no display names here") as failed:
        rebuild_in_processes(functools.partial(with_a_failing_projection, Settings()), [["refuses"], ["users"]],
                             workers=2, fresh=True)
    assert any("applying UserDisplayNameChanged at position" in n for n in failed.value.__notes__)
    assert system.projectors["users"].store.position("users") == head  # finished and swapped in all the same
    assert system.readmodels.position("refuses") == 0


# ---------------------------------------------------------------- a new projection, backfilled live
USER_ZONES = Table("user_zones", columns=(("id", "text"), ("zone", "text")))
ZONE_COUNTS = Table("zone_counts", columns=(("id", "text"), ("users", "int")))


class PeoplePerZone:
    """A projection the catalogue did not have: how many people live in each
    time zone (docs/PROJECTIONS.md builds the same)."""

    name = "people_per_zone"
    tables = (USER_ZONES, ZONE_COUNTS)
    event_types = frozenset({"UserRegistered", "UserTimeZoneChanged", "UserDeleted"})

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        before = tx.get("user_zones", e.aggregate_id)
        if before is not None:
            self._count(tx, before["zone"], -1)
        if e.event_type == "UserDeleted":
            tx.delete("user_zones", e.aggregate_id)
            return
        tx.upsert("user_zones", {"id": e.aggregate_id, "zone": e.data["time_zone"]})
        self._count(tx, e.data["time_zone"], +1)

    def _count(self, tx: ReadModelTx, zone: str, by: int) -> None:
        row = tx.get("zone_counts", zone) or {"id": zone, "users": 0}
        tx.upsert("zone_counts", {**row, "users": row["users"] + by})


def expected_zones(c: Container, ids: list[uuid.UUID]) -> dict[str, int]:
    out: dict[str, int] = {}
    for uid in ids:
        zone = c.app.get_user(uid).time_zone
        out[zone] = out.get(zone, 0) + 1
    return out


def test_a_new_projection_is_backfilled_by_rebuild_while_the_system_runs(
        system: Container, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import api.bootstrap
    from projections.catalogue import all_projections

    ids = register(system, 80)
    users = system.projectors["users"]
    busy = Running(system, ids, [users], writers=2)
    try:
        # 2. add it to the catalogue (the deploy), 3. backfill while events arrive
        monkeypatch.setattr(api.bootstrap, "all_projections", lambda: {**all_projections(), "people_per_zone":
                                                                        PeoplePerZone()})
        rc, out = cli(capsys, "rebuild", "people_per_zone")
        assert rc == 0, out
        assert "people_per_zone: rebuilt to position" in out
        # 4. its projector follows from where the rebuild swapped in
        new = Projector(PeoplePerZone(), system.readmodels)
        follower = Running(system, busy.ids, [new], writers=0)
        time.sleep(0.3)
    finally:
        busy.stop()
    follower.stop()
    counts = {r["id"]: r["users"] for r in system.readmodels.rows("zone_counts") if r["users"]}
    assert counts == expected_zones(system, busy.ids)
    assert sum(counts.values()) == len(busy.ids) > 80
    rc, out = cli(capsys, "projections", "verify", "people_per_zone")
    assert rc == 0, out


def test_a_new_projection_catches_up_from_zero_when_its_projector_starts(system: Container) -> None:
    ids = register(system, 80)
    new = Projector(PeoplePerZone(), system.readmodels)
    assert new.position == 0
    busy = Running(system, ids, [new], writers=2)  # `attendwise project people_per_zone`, history and new events
    time.sleep(0.5)
    busy.stop()
    counts = {r["id"]: r["users"] for r in system.readmodels.rows("zone_counts") if r["users"]}
    assert counts == expected_zones(system, busy.ids)
    assert verify(new.projection, new.store, system.event_log).ok


# ---------------------------------------------------------------- the feed graph
def community_life(c: Container) -> tuple[str, str]:
    """People follow each other, found a community, post and like; returns a
    (follower, followee) pair that exists."""
    import datetime as dt

    from commands.messages import CreateCommunity, FollowUser, LikePost, PublishPost

    a, b, d = register(c, 3)
    ctx = {p: CommandContext.for_user(p) for p in (a, b, d)}
    c.app.follow_user(FollowUser(b), ctx[a])
    c.app.follow_user(FollowUser(d), ctx[b])
    community = c.app.create_community(CreateCommunity("Runners"), ctx[b])
    post = c.app.publish_post(PublishPost(community, "10k on Sunday"), ctx[b], dt.datetime.now(dt.timezone.utc))
    c.app.like_post(LikePost(post), ctx[a])
    return str(a), str(b)


def test_verify_compares_the_feed_graph_with_a_replay(system: Container, capsys: pytest.CaptureFixture[str]) -> None:
    follower, followee = community_life(system)  # the embedded graph: g_ tables beside the read models
    system.projectors["feed_graph"].catch_up(system.event_log)
    rc, out = cli(capsys, "projections", "verify", "feed_graph")
    assert rc == 0 and "feed_graph: no differences at position" in out, out
    import sqlite3

    graph = sqlite3.connect(system.settings.readmodels_path, isolation_level=None, timeout=30)  # no Neo4j set
    graph.execute("DELETE FROM g_follows WHERE follower_id = ?", (follower,))
    graph.execute("UPDATE g_posts SET likes = 7")
    graph.close()
    rc, out = cli(capsys, "projections", "verify", "feed_graph")
    assert rc == 1
    assert f"follows {follower}:{followee}: missing" in out
    assert "posts " in out and "differs (likes: live 7, rebuilt 1)" in out


def test_verify_compares_a_neo4j_feed_graph_with_a_replay(neo4j_uri: str, tmp_path: Path) -> None:
    from adapters.graph_neo4j import DATABASE, Neo4jFeedGraph
    from adapters.graph_sql import SQLiteFeedGraph
    from projections.feed_graph import FeedGraphProjection
    from projections.verify import verify_graph

    c = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None, neo4j_uri=None,
                       s3_endpoint=None))
    neo = Neo4jFeedGraph(neo4j_uri, namespace=f"t{uuid.uuid4().hex[:10]}")
    try:
        follower, followee = community_life(c)
        live = Projector(FeedGraphProjection(), neo)  # type: ignore[arg-type]
        live.catch_up(c.event_log)
        result = verify_graph(FeedGraphProjection(), neo, c.event_log, SQLiteFeedGraph(tmp_path / "a.sqlite3"))
        assert result.ok and result.position == c.event_log.head()
        neo._driver.execute_query("MATCH (:User {ns: $ns, id: $a})-[f:FOLLOWS]->() DELETE f",  # noqa: SLF001
                                  ns=neo.ns, a=follower, database_=DATABASE)
        result = verify_graph(FeedGraphProjection(), neo, c.event_log, SQLiteFeedGraph(tmp_path / "b.sqlite3"))
        assert [(d.table, d.key, d.kind) for d in result.differences] == [("follows", f"{follower}:{followee}",
                                                                           "missing")]
    finally:
        neo.drop()
        neo.close()
        c.close()


def test_follow_bus_records_a_failing_batch_retries_it_and_clears_the_error(system: Container) -> None:
    """Full mode's loop (`attendwise project`): a batch that fails is tried
    again, never skipped, and its error is shown meanwhile."""
    import asyncio

    from adapters.bus import InProcessBus
    from projections.projector import follow_bus

    class Flaky(UsersProjection):
        failures = 3

        def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
            if e.event_type == "UserRegistered" and e.data["display_name"] == "Person 1" and Flaky.failures:
                Flaky.failures -= 1
                raise RuntimeError("flaky")
            super().apply(e, tx)

    register(system, 1)
    projector = Projector(Flaky(), system.readmodels)
    seen: list[int] = []

    async def run() -> None:
        bus, stop = InProcessBus(), asyncio.Event()
        task = asyncio.create_task(follow_bus(projector, system.event_log, bus, stop))
        await asyncio.sleep(0.2)  # caught up with the log; now the bus brings the rest
        head = system.event_log.head()
        register(system, 2)
        await bus.publish(system.event_log.read(head, 100), None)
        while projector.position < system.event_log.head():
            errors = system.readmodels.errors()
            if "users" in errors:
                seen.append(errors["users"].attempts)
                assert "RuntimeError: flaky (applying UserRegistered at position" in errors["users"].error
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(run(), 30))
    assert seen and Flaky.failures == 0  # the error was visible while it was retried
    assert "users" not in system.readmodels.errors()
    assert len(system.readmodels.rows("users")) == 3


class CountingBus:
    """The in-process bus, counting the subscriptions taken on it."""

    def __init__(self) -> None:
        from adapters.bus import InProcessBus

        self.inner, self.subscriptions = InProcessBus(), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self, start_seq: int) -> Any:
        self.subscriptions += 1
        return self.inner.stream(start_seq)


class Breakable(KindsProjection):
    """`KindsProjection` whose every batch fails while `broken` is set (as
    when its store is down)."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        if self.broken:
            raise RuntimeError("its store is down")
        super().apply(e, tx)


async def until(condition: Callable[[], bool], what: Callable[[], object] = lambda: None,
                timeout: float = 20) -> None:
    """Waits for `condition()`; fails with `what()` after `timeout` seconds."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        await asyncio.sleep(0.02)


def at_head(c: Container, *projectors: Projector) -> Callable[[], bool]:
    return lambda: all(p.position >= c.event_log.head() for p in projectors)


def test_projections_share_one_subscription_and_a_stuck_one_holds_none_of_the_others(system: Container) -> None:
    """`attendwise project` with several projections: each message is taken
    once for all of them; one that keeps failing leaves the shared stream
    after its patience while the others go on, and catches up on its own
    once it can."""
    import asyncio

    from adapters.relay import Relay
    from projections.projector import follow_bus_together

    register(system, 3)
    healthy = [Projector(UsersProjection(), system.readmodels), Projector(PeoplePerZone(), system.readmodels)]
    breakable = Breakable(broken=False)
    stuck = Projector(breakable, system.readmodels)
    projectors = [*healthy, stuck]
    bus = CountingBus()

    def positions() -> dict[str, int]:
        return {p.projection.name: p.position for p in projectors}

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(follow_bus_together(projectors, system.event_log, bus, stop, batch=4,
                                                       patience=0.5))
        await until(at_head(system, *projectors), positions)  # caught up from the log
        register(system, 5)
        await Relay(system.event_log, bus).drain()
        await until(at_head(system, *projectors), positions)
        assert bus.subscriptions == 1  # every message taken once for the three

        breakable.broken = True
        register(system, 30)  # more than its queue (4 batches of 4) holds
        await Relay(system.event_log, bus).drain()
        head = system.event_log.head()
        await until(at_head(system, *healthy), positions)  # not held by the stuck one
        assert stuck.position < head and "kinds" in system.readmodels.errors()
        breakable.broken = False
        await until(at_head(system, stuck), positions)  # from the log first, then on a subscription of its own
        await until(lambda: bus.subscriptions >= 2, lambda: "the stuck projection never subscribed on its own", 10)
        register(system, 1)  # and it follows the stream from there, as do the others
        await Relay(system.event_log, bus).drain()
        await until(at_head(system, *projectors), positions)
        assert bus.subscriptions == 2
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(run(), 60))
    users = system.readmodels.rows("users")
    assert len(users) == 39 and len(system.readmodels.rows("kinds")) == 39
    assert sum(r["users"] for r in system.readmodels.rows("zone_counts")) == 39
    assert "kinds" not in system.readmodels.errors()


def test_a_projection_failing_from_the_start_does_not_keep_the_others_from_following(system: Container) -> None:
    """At start each projection catches up from the log; one that cannot
    (its batch keeps failing) is left to follow on its own after its
    patience, and the others take the shared stream meanwhile."""
    import asyncio

    from adapters.relay import Relay
    from projections.projector import follow_bus_together

    register(system, 2)
    breakable = Breakable(broken=True)
    users, failing = Projector(UsersProjection(), system.readmodels), Projector(breakable, system.readmodels)
    bus = CountingBus()

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(follow_bus_together([users, failing], system.event_log, bus, stop, patience=0.3))
        await until(lambda: bus.subscriptions >= 1)
        register(system, 2)
        await Relay(system.event_log, bus).drain()
        await until(at_head(system, users))
        assert failing.position == 0 and bus.subscriptions == 1
        breakable.broken = False
        await until(lambda: at_head(system, failing)() and bus.subscriptions >= 2)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(run(), 60))
    assert len(system.readmodels.rows("users")) == 4 and len(system.readmodels.rows("kinds")) == 4


def test_a_transaction_reads_its_own_writes_as_the_database_would(system: Container) -> None:
    """`tx.get` answers from what the transaction wrote or read before
    (no flush, no round trip): it must answer what the database would."""
    store = system.readmodels
    store.install([KINDS])
    with store.transaction("kinds") as tx:
        tx.upsert("kinds", {"id": "a", "n": 1, "tags": {"k": [1, 2]}, "ok": True})
        tx.upsert("kinds", {"id": "b", "n": 2})
        tx.set_position(1)
    with store.transaction("kinds") as tx:
        tx.patch("kinds", "a", {"n": 10})  # not read yet in this transaction: the database must answer
        assert tx.get("kinds", "a") == {"id": "a", "n": 10, "x": None, "ok": True, "tags": {"k": [1, 2]},
                                        "note": None}
        tx.patch("kinds", "a", {"tags": {3: (4, 5)}, "ok": 0})  # known now: answered from memory
        assert tx.get("kinds", "a")["tags"] == {"3": [4, 5]} and tx.get("kinds", "a")["ok"] is False
        tx.get("kinds", "a")["tags"]["3"].append("mutated by a caller")
        assert tx.get("kinds", "a")["tags"] == {"3": [4, 5]}
        tx.upsert("kinds", {"id": "b", "note": ""})  # an upsert replaces the whole row
        assert tx.get("kinds", "b") == {"id": "b", "n": None, "x": None, "ok": None, "tags": None, "note": ""}
        tx.delete("kinds", "b")
        tx.patch("kinds", "b", {"n": 5})
        assert tx.get("kinds", "b") is None
        assert tx.get("kinds", "c") is None
        tx.set_position(2)
    assert store.get("kinds", "a") == {"id": "a", "n": 10, "x": None, "ok": False, "tags": {"3": [4, 5]},
                                       "note": None}
    assert store.get("kinds", "b") is None
