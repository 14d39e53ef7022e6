"""Erasure with an immutable log: personal data in events is encrypted with a
key per person kept outside the log; deleting the account destroys the key.
Afterwards the events remain, replay still works, and the personal fields
read back as erased. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.credentials import SQLiteCredentialStore
from adapters.eventstore import ApplicationEventLog, events_table, open_event_store
from adapters.personal_data import ERASED, PostgresKeyVault, SQLiteKeyVault
from adapters.readmodels import SQLiteReadModelStore
from commands.application import AttendWise
from commands.messages import ChangeDisplayName, CommandContext, RegisterUser
from domain.errors import NotFound
from domain.identity import InvalidCredentials
from projections.rebuild import rebuild
from projections.users import UsersProjection

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AttendWise]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    vault = PostgresKeyVault(url) if url else SQLiteKeyVault(tmp_path / "keys.sqlite3")
    a = open_event_store(url, tmp_path / "events.sqlite3", vault=vault)
    a.credentials = SQLiteCredentialStore(tmp_path / "credentials.sqlite3")
    yield a
    a.close()


def raw_states(app: AttendWise) -> bytes:
    inner = getattr(app.recorder, "inner", app.recorder)
    with inner.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT state FROM {events_table(app)}")
        return b"".join(bytes(r["state"] if isinstance(r, dict) else r[0]) for r in curs.fetchall())


def test_deleting_an_account_erases_its_personal_data_but_keeps_the_log(app: AttendWise, tmp_path: Path) -> None:
    uid = app.register_user(RegisterUser("erase.me@example.org", "Erin Example", "UTC", PASSWORD), CommandContext())
    app.change_display_name(ChangeDisplayName(uid, "Erin Renamed"), CommandContext.for_user(uid))
    keep = app.register_user(RegisterUser("stay@example.org", "Stan Stays", "UTC", PASSWORD), CommandContext())
    stored = raw_states(app)
    assert b"erase.me@example.org" not in stored and b"Erin" not in stored  # encrypted at rest
    assert app.get_user(uid).email == "erase.me@example.org"  # readable while the key exists
    log = ApplicationEventLog(app)
    before = log.head()

    with pytest.raises(InvalidCredentials):
        app.delete_account(CommandContext.for_user(uid), "wrong password!")
    app.delete_account(CommandContext.for_user(uid), PASSWORD)

    # the events remain, in order, plus the deletion
    envelopes = log.read(0, 100)
    assert log.head() == before + 2  # User.Deleted, EmailAddress.Released
    assert [e.position for e in envelopes] == sorted(e.position for e in envelopes)
    mine = [e for e in envelopes if e.aggregate_id == str(uid) or e.data.get("user_id") == str(uid)]
    assert [e.event_type for e in mine][:3] == ["UserRegistered", "EmailAddressClaimed", "UserDisplayNameChanged"]
    assert {mine[0].data["email"], mine[0].data["display_name"], mine[1].data["email"], mine[2].data["display_name"]} \
        == {ERASED}
    # replay still works: the aggregate loads, its personal fields erased
    replayed = app.repository.get(uid)
    assert replayed.deleted and replayed.email == ERASED and replayed.display_name == ERASED
    with pytest.raises(NotFound):
        app.get_user(uid)
    with pytest.raises(InvalidCredentials):
        app.authenticate("erase.me@example.org", PASSWORD)
    # other people are untouched
    assert app.get_user(keep).display_name == "Stan Stays"
    # projections rebuild from the log: the deleted account is simply absent
    store = SQLiteReadModelStore(tmp_path / "rm.sqlite3")
    store.install(UsersProjection.tables)
    rebuild(UsersProjection(), store, log)
    assert [r["email"] for r in store.rows("users")] == ["stay@example.org"]
    # the address is free again, for a new account
    again = app.register_user(RegisterUser("ERASE.ME@example.org", "New Erin", "UTC", PASSWORD), CommandContext())
    assert again != uid and app.authenticate("erase.me@example.org", PASSWORD) == again
    # repeating an interrupted deletion is harmless
    app.delete_account(CommandContext.for_user(uid), PASSWORD)


def test_a_stolen_database_dump_without_the_keys_reads_nothing(tmp_path: Path) -> None:
    vault = SQLiteKeyVault(tmp_path / "keys.sqlite3")
    app = open_event_store(None, tmp_path / "events.sqlite3", vault=vault)
    app.credentials = SQLiteCredentialStore(tmp_path / "c.sqlite3")
    uid = app.register_user(RegisterUser("secret@example.org", "Sec Ret", "UTC"), CommandContext())
    app.close()
    thief = open_event_store(None, tmp_path / "events.sqlite3", vault=SQLiteKeyVault(tmp_path / "empty.sqlite3"))
    assert thief.repository.get(uid).email == ERASED
    thief.close()


class FakeModel:
    """Only the model's identity matters here (which version made a template)."""

    model, model_version, threshold = "test-model", "v1", 0.4


def test_a_face_template_is_sealed_in_every_copy_and_gone_with_the_account(app: AttendWise) -> None:
    import base64
    import uuid

    from domain.enrolment import FaceEnrolment, enrolment_id

    app.analyzer = FakeModel()
    uid = app.register_user(RegisterUser("face@example.org", "Fay", "UTC", PASSWORD), CommandContext())
    template = base64.b64encode(bytes(range(64)) * 32).decode()  # a 2,048-byte embedding
    enrolment = FaceEnrolment(user_id=str(uid))
    enrolment.enrol(template, "test-model", "v1", 0.4, uuid.uuid4())
    app.save_stamped(CommandContext.for_user(uid), enrolment)
    assert template.encode() not in raw_states(app)  # encrypted at rest
    enrolled = [e for e in ApplicationEventLog(app).read(0, 100) if e.event_type == "FaceEnrolmentEnrolled"]
    assert enrolled[0].data["template"].startswith("enc:")  # sealed even for projections, the bus and auditors
    assert app.face_template(str(uid)) == base64.b64decode(template)  # only the aggregate reads it

    app.delete_account(CommandContext.for_user(uid), PASSWORD)
    assert app.face_template(str(uid)) is None  # erased with the key: nothing left to compare
    assert app.repository.get(enrolment_id(uid)).template == ERASED
