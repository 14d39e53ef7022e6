"""Contract of the event store, run against every adapter: SQLite (embedded)
and PostgreSQL (full mode, the real server `infra/` starts)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.errors import ServiceUnavailable
from adapters.eventstore import ApplicationEventLog, events_table, is_postgres, open_event_store
from commands.application import AttendWise
from commands.messages import ChangeDisplayName, CommandContext, RegisterUser
from domain.errors import ConcurrencyConflict, EmailAlreadyRegistered, InvalidInput


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AttendWise]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    a = open_event_store(url, tmp_path / "events.sqlite3")
    yield a
    a.close()


def test_registered_user_reads_back_with_metadata(app: AttendWise) -> None:
    ctx = CommandContext(actor="user:admin")
    uid = app.register_user(RegisterUser("  Ada@Example.org ", "Ada  Lovelace", "Europe/London"), ctx)
    user = app.get_user(uid)
    assert (user.email, user.display_name, user.time_zone) == ("ada@example.org", "Ada Lovelace", "Europe/London")

    envelopes = ApplicationEventLog(app).read(0, 10)
    assert [e.event_type for e in envelopes] == ["UserRegistered", "EmailAddressClaimed"]
    first = envelopes[0]
    assert first.aggregate_id == str(uid) and first.aggregate_version == 1
    assert first.actor == "user:admin" and first.command_id == str(ctx.command_id)
    assert first.context == "identity" and first.schema_version == 2
    assert first.timestamp.endswith("+00:00")
    assert first.position < envelopes[1].position
    assert len({e.event_id for e in envelopes}) == 2


def test_second_registration_of_an_email_is_refused_and_writes_nothing(app: AttendWise) -> None:
    app.register_user(RegisterUser("ada@example.org", "Ada"), CommandContext())
    log = ApplicationEventLog(app)
    head = log.head()
    with pytest.raises(EmailAlreadyRegistered):
        app.register_user(RegisterUser("ADA@example.org", "Other Ada"), CommandContext())
    assert log.head() == head


def test_invalid_input_appends_nothing(app: AttendWise) -> None:
    for bad in (RegisterUser("not-an-email", "X"), RegisterUser("a@b.org", "  "),
                RegisterUser("a@b.org", "X", "Mars/Olympus")):
        with pytest.raises(InvalidInput):
            app.register_user(bad, CommandContext())
    assert ApplicationEventLog(app).head() == 0


def test_stale_version_gives_conflict_not_lost_write(app: AttendWise) -> None:
    uid = app.register_user(RegisterUser("ada@example.org", "Ada"), CommandContext())
    first, second = app.get_user(uid), app.get_user(uid)  # both at version 1
    first.change_display_name("Ada One")
    app.save_stamped(CommandContext(), first)
    second.change_display_name("Ada Two")
    with pytest.raises(ConcurrencyConflict):
        app.save_stamped(CommandContext(), second)
    assert app.get_user(uid).display_name == "Ada One"
    assert app.get_user(uid).version == 2


def test_stored_events_cannot_be_updated_or_deleted(app: AttendWise) -> None:
    app.register_user(RegisterUser("ada@example.org", "Ada"), CommandContext())
    table = events_table(app)
    datastore = app.recorder.inner.datastore if hasattr(app.recorder, "inner") else app.recorder.datastore
    for sql in (f"UPDATE {table} SET topic = 'x'", f"DELETE FROM {table}"):
        with pytest.raises(Exception, match="append-only"):
            with datastore.transaction(commit=True) as curs:
                curs.execute(sql)
    if is_postgres(app):
        with pytest.raises(Exception, match="append-only"):
            with datastore.transaction(commit=True) as curs:
                curs.execute(f"TRUNCATE {table}")
    assert ApplicationEventLog(app).head() == 2


def test_version_one_event_is_read_as_version_two(app: AttendWise) -> None:
    """Schema evolution: `User.Registered` v1 had no time zone; upcasting reads it as UTC."""
    uid = uuid.uuid4()
    v1_state = {"email": "old@example.org", "display_name": "Old Timer", "originator_topic": "domain.users:User",
                "timestamp": "2024-01-01T00:00:00+00:00", "meta": {"actor": "anonymous"}}
    stored = StoredEvent(originator_id=uid, originator_version=1, topic="domain.users:User.Registered",
                         state=json.dumps(v1_state).encode())
    app.recorder.insert_events([stored])
    user = app.get_user(uid)
    assert user.time_zone == "UTC" and user.display_name == "Old Timer"
    envelope = ApplicationEventLog(app).read(0, 1)[0]
    assert envelope.data["time_zone"] == "UTC" and envelope.schema_version == 2


def test_display_name_change_is_an_event(app: AttendWise) -> None:
    uid = app.register_user(RegisterUser("ada@example.org", "Ada"), CommandContext())
    assert app.change_display_name(ChangeDisplayName(uid, "Countess"), CommandContext(actor="user:x")) == 2
    last = ApplicationEventLog(app).read(2, 10)
    assert [(e.event_type, e.data["display_name"], e.actor) for e in last] == [("UserDisplayNameChanged", "Countess", "user:x")]


def test_log_reads_in_pages_in_position_order(app: AttendWise) -> None:
    for i in range(7):
        app.register_user(RegisterUser(f"u{i}@example.org", f"U{i}"), CommandContext())
    log = ApplicationEventLog(app)
    seen, at = [], 0
    while page := log.read(at, 3):
        seen += page
        at = page[-1].position
    assert len(seen) == 14 and [e.position for e in seen] == sorted(e.position for e in seen)
    assert log.head() == seen[-1].position


def test_scan_returns_the_wanted_kinds_of_event_in_a_window_as_read_does(app: AttendWise) -> None:
    """What a rebuild reads: the store filters by kind of event and position
    before decoding, and gives the same envelopes `read` gives."""
    for i in range(5):
        uid = app.register_user(RegisterUser(f"u{i}@example.org", f"U{i}"), CommandContext())
        app.change_display_name(ChangeDisplayName(uid, f"V{i}"), CommandContext())
    log = ApplicationEventLog(app)
    everything = log.read(0, 100)
    kinds = {"UserRegistered", "UserDisplayNameChanged"}
    lo, hi = everything[2].position, everything[-3].position
    assert log.scan(lo, hi, kinds) == [e for e in everything if lo < e.position <= hi and e.event_type in kinds]
    assert [e.event_type for e in log.scan(0, log.head(), {"EmailAddressClaimed"})] == ["EmailAddressClaimed"] * 5
    assert log.scan(0, log.head(), {"NoSuchEvent"}) == [] and log.scan(hi, lo, kinds) == []
    assert log.counts() == dict(Counter(e.event_type for e in everything))


def test_several_aggregates_load_together_as_one_by_one(app: AttendWise) -> None:
    """`_find_all` (one query on PostgreSQL): the same aggregates `_find`
    gives, None for a missing one or one of another kind."""
    from domain.users import User

    ada = app.register_user(RegisterUser("ada@example.org", "Ada"), CommandContext())
    app.change_display_name(ChangeDisplayName(ada, "Countess"), CommandContext())
    bob = app.register_user(RegisterUser("bob@example.org", "Bob"), CommandContext())
    nobody = uuid.uuid4()
    wanted = [(bob, User), (ada, User), (nobody, User), (ada, StoredEvent)]
    together = app._find_all(*wanted)
    alone = [app._find(i, kind) for i, kind in wanted]
    assert [None if a is None else (a.id, a.version, a.display_name) for a in together] == \
        [None if a is None else (a.id, a.version, a.display_name) for a in alone] == \
        [(bob, 1, "Bob"), (ada, 2, "Countess"), None, None]


def test_unreachable_postgres_names_the_service_and_setting(tmp_path: Path) -> None:
    with socket_free_port() as port:
        url = f"postgresql://nobody:secret@127.0.0.1:{port}/none"
    with pytest.raises(ServiceUnavailable) as e:
        open_event_store(url, tmp_path / "x.sqlite3")
    assert "PostgreSQL" in str(e.value) and "ATTENDWISE_DATABASE_URL" in str(e.value)
    assert "secret" not in str(e.value)


class socket_free_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *a: object) -> None:
        self.s.close()
