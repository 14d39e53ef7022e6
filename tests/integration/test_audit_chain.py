"""Tamper evidence, on SQLite and PostgreSQL: seal a real history, then
change the stored events behind the application's back (triggers disabled,
as an attacker with database access would) and check `verify` finds and
locates each change."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.audit_chain import AuditSeals, Sealer, postgres_seals, sqlite_seals, verify, verify_aggregate
from adapters.eventstore import ApplicationEventLog, events_table, open_event_store
from adapters.personal_data import SQLiteKeyVault
from adapters.tokens import Keyring
from commands.messages import CommandContext, RegisterUser
from domain.audit import GENESIS, Seal, seal_rows

PASSWORD = "correct horse battery staple"


@dataclass
class History:
    log: ApplicationEventLog
    seals: AuditSeals
    keyring: Keyring
    sql: Callable[[str, tuple], None]  # runs a statement directly on the event table's database
    table: str
    id_column: str

    def sealer(self) -> Sealer:
        return Sealer(self.log.raw, self.seals, self.keyring, checkpoint_every=10)

    def verify(self):  # type: ignore[no-untyped-def]
        return verify(self.log.raw, self.seals, self.keyring)


@pytest.fixture(params=["sqlite", "postgres"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    app = open_event_store(url, tmp_path / "events.sqlite3", vault=SQLiteKeyVault(tmp_path / "keys.sqlite3"))
    app.set_password = lambda *a: None  # type: ignore[method-assign]  # no credential store needed here
    for i in range(12):
        uid = app.register_user(RegisterUser(f"p{i}@example.org", f"Person {i}"), CommandContext())
        if i % 3 == 0:
            from commands.messages import ChangeDisplayName

            app.change_display_name(ChangeDisplayName(uid, f"Renamed {i}"), CommandContext())
    table = events_table(app)
    if url:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")

        def sql(statement: str, params: tuple) -> None:
            conn.execute(statement.replace("?", "%s"), params)
        seals, id_column = postgres_seals(url), "notification_id"
    else:
        conn = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None)
        for trigger in ("no_update", "no_delete"):
            conn.execute(f"DROP TRIGGER {table}_{trigger}")

        def sql(statement: str, params: tuple) -> None:
            conn.execute(statement, params)
        seals, id_column = sqlite_seals(tmp_path / "audit.sqlite3"), "rowid"
    h = History(ApplicationEventLog(app), seals, Keyring(tmp_path / "keys"), sql, table, id_column)
    assert h.sealer().seal() == h.log.head() > 20
    yield h
    conn.close()
    app.close()


def test_an_untouched_log_verifies_with_signed_checkpoints(history: History) -> None:
    report = history.verify()
    assert report.ok and report.events == history.log.head() and report.checkpoints >= 2


def test_one_changed_byte_is_found_at_its_position(history: History) -> None:
    [row] = history.log.raw(6, 1)
    changed = bytearray(row.state)
    changed[len(changed) // 2] ^= 0x01
    history.sql(f"UPDATE {history.table} SET state = ? WHERE {history.id_column} = ?", (bytes(changed), row.position))
    report = history.verify()
    assert not report.ok and (report.first.kind, report.first.position) == ("altered", row.position)


def test_a_deleted_event_is_found_at_its_position(history: History) -> None:
    history.sql(f"DELETE FROM {history.table} WHERE {history.id_column} = ?", (9,))
    report = history.verify()
    assert (report.first.kind, report.first.position) == ("removed", 9)


def test_two_swapped_events_are_found_as_reordered(history: History) -> None:
    t, col = history.table, history.id_column
    history.sql(f"UPDATE {t} SET {col} = ? WHERE {col} = ?", (-1, 4))
    history.sql(f"UPDATE {t} SET {col} = ? WHERE {col} = ?", (4, 11))
    history.sql(f"UPDATE {t} SET {col} = ? WHERE {col} = ?", (11, -1))
    report = history.verify()
    kinds = {(f.kind, f.position) for f in report.findings}
    assert {("reordered", 4), ("reordered", 11)} <= kinds and report.first.position == 4


def test_rewritten_seals_are_caught_by_the_signed_checkpoints(history: History) -> None:
    """An attacker who alters an event and recomputes every seal still cannot
    sign checkpoints: the first checkpoint at or after the change says so."""
    [row] = history.log.raw(14, 1)
    history.sql(f"UPDATE {history.table} SET state = ? WHERE {history.id_column} = ?", (row.state + b" ", row.position))
    forged = seal_rows("0" * 64, history.log.raw(0, 10_000))
    history.seals.db.run("DELETE FROM audit_seals")
    history.seals.add(forged)
    report = history.verify()
    assert [f.kind for f in report.findings] and {f.kind for f in report.findings} == {"checkpoint_mismatch"}
    assert report.first.position == min(c.position for c in history.seals.checkpoints() if c.position >= 15)


def test_a_forged_checkpoint_signature_is_refused(history: History) -> None:
    c = history.seals.checkpoints()[0]
    history.seals.db.run(f"UPDATE audit_checkpoints SET signature = {history.seals.p} WHERE position = "
                         f"{history.seals.p}", ("A" * len(c.signature), c.position))
    assert [(f.kind, f.position) for f in history.verify().findings] == [("checkpoint_invalid", c.position)]


def test_sealing_again_and_new_events_keep_the_chain(history: History) -> None:
    assert history.sealer().seal() == 0  # nothing new: nothing sealed, no new checkpoint
    before = len(history.seals.checkpoints())
    history.log.app.register_user(RegisterUser("late@example.org", "Late"), CommandContext())
    assert history.sealer().seal() == 2
    assert len(history.seals.checkpoints()) == before + 1 and history.verify().ok


def test_crypto_shredding_does_not_break_the_chain(history: History) -> None:
    """Seals cover the stored (encrypted) bytes: destroying a person's key
    erases their data everywhere and leaves the proof intact."""
    first = history.log.read(0, 1)[0]
    history.log.app.vault.destroy(first.aggregate_id)
    assert history.log.read(0, 1)[0].data["email"] == "[erased]"
    assert history.verify().ok


def renamed(history: History) -> tuple[str, list]:  # type: ignore[type-arg]
    """An aggregate with two events (a user who changed their name), and its rows."""
    rows = history.log.raw(0, 10_000)
    aggregate = next(r.originator_id for r in rows if r.version == 2)
    return aggregate, [r for r in rows if r.originator_id == aggregate]


def test_a_batch_of_seals_is_stored_whole_or_not_at_all(history: History) -> None:
    """A seal batch that fails part-way (here: a seal without its chain) leaves
    no seal of it behind: sealing resumes from a head that is all there."""
    head, chain = history.seals.head()
    good = Seal(head + 1, "c" * 64, "d" * 64, "agg", 1, "e" * 64)
    broken = Seal(head + 2, "c" * 64, None, "agg", 2, "e" * 64)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the database's own NOT NULL error, whichever driver
        history.seals.add([good, broken])
    assert history.seals.head() == (head, chain)


def test_one_aggregate_is_checked_against_its_own_chain(history: History) -> None:
    aggregate, [first, second] = renamed(history)
    assert verify_aggregate(history.log.raw_aggregate, history.seals, aggregate).ok
    history.sql(f"UPDATE {history.table} SET state = ? WHERE {history.id_column} = ?", (second.state + b" ", second.position))
    report = verify_aggregate(history.log.raw_aggregate, history.seals, aggregate)
    assert [(f.kind, f.position) for f in report.findings] == [("altered", second.position)]
    others = {r.originator_id for r in history.log.raw(0, 10_000)} - {aggregate}
    assert all(verify_aggregate(history.log.raw_aggregate, history.seals, a).ok for a in others)


def test_an_event_removed_with_its_seal_breaks_its_aggregates_chain(history: History) -> None:
    """Someone deletes an event and its seal, and re-chains the global seals
    after it: the aggregate's next seal still names the link it followed."""
    aggregate, [first, second] = renamed(history)
    history.sql(f"DELETE FROM {history.table} WHERE {history.id_column} = ?", (first.position,))
    history.seals.db.run(f"DELETE FROM audit_seals WHERE position = {history.seals.p}", (first.position,))
    kept = list(history.seals.seals())
    rechained, previous = [], GENESIS
    for s in kept:
        from domain.audit import chain_hash

        previous = chain_hash(previous, s.position, s.content)
        rechained.append(Seal(s.position, s.content, previous, s.aggregate, s.version, s.link))
    history.seals.db.run("DELETE FROM audit_seals")
    history.seals.add(rechained)
    kinds = {(f.kind, f.position) for f in history.verify().findings}
    assert ("link_broken", second.position) in kinds
    one = verify_aggregate(history.log.raw_aggregate, history.seals, aggregate)
    assert [(f.kind, f.position) for f in one.findings] == [("link_broken", second.position)]


def test_seals_made_before_aggregate_chains_still_verify(history: History) -> None:
    """Seals written by a release without aggregate links (no aggregate,
    version or link) verify as before; what is sealed after them is linked."""
    old = [Seal(s.position, s.content, s.chain) for s in history.seals.seals()]
    history.seals.db.run("DELETE FROM audit_seals")
    history.seals.add(old)
    assert history.verify().ok
    history.log.app.register_user(RegisterUser("after@example.org", "After"), CommandContext())
    assert history.sealer().seal() == 2
    newest = list(history.seals.seals())[-2:]
    assert all(s.link and s.version == 1 for s in newest) and history.verify().ok


def test_an_old_seals_table_gains_the_aggregate_columns(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    db.execute("CREATE TABLE audit_seals (position BIGINT PRIMARY KEY, content TEXT NOT NULL, chain TEXT NOT NULL)")
    db.execute("INSERT INTO audit_seals VALUES (1, 'c', 'h')")
    db.commit()
    db.close()
    seals = sqlite_seals(tmp_path / "audit.sqlite3")
    assert list(seals.seals()) == [Seal(1, "c", "h")] and seals.last_links({"x"}) == {}
