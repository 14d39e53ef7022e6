"""The event store adapter: the `eventsourcing` library on PostgreSQL (full
mode) or an SQLite file (embedded mode), made append-only, with optional
group commit, and read back as a notification log of `EventEnvelope`s."""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import threading
import uuid

import orjson
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Notification,
    InterfaceError,
    OperationalError,
    StoredEvent,
)

from adapters.errors import ServiceUnavailable
from adapters.personal_data import PersonalDataMapper, decrypt_state, personal_fields, subject_of
from commands.application import AttendWise
from domain.audit import StoredRow
from domain.envelope import EventEnvelope

DATABASE_SETTING = "ATTENDWISE_DATABASE_URL"


class EventLog(Protocol):
    """Port: the event store read as one totally ordered log.

    - `read(after, limit)` returns up to `limit` envelopes whose position is
      greater than `after`, in position order. Positions only grow; a reader
      that has seen position p never later finds an unseen event below p.
    - `scan(after, upto, types)` returns every envelope whose position is in
      (after, upto] and whose `event_type` is one of `types`, in position
      order: a rebuild reads only the kinds of events its projections use,
      and the store filters them before anything is decoded.
    - `head()` is the greatest position recorded (0 when empty).
    - `counts()` is how many events of each kind the log holds (a rebuild
      starts its largest projections first).
    """

    def read(self, after: int, limit: int) -> list[EventEnvelope]: ...

    def scan(self, after: int, upto: int, types: Collection[str]) -> list[EventEnvelope]: ...

    def head(self) -> int: ...

    def counts(self) -> dict[str, int]: ...


# --------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------
def postgres_env(database_url: str) -> dict[str, str]:
    u = urlparse(database_url)
    if u.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{DATABASE_SETTING} must be a postgresql:// URL, got {u.scheme!r}")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": u.path.lstrip("/") or "attendwise",
        "POSTGRES_HOST": u.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": unquote(u.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(u.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": "10",
        "POSTGRES_MAX_OVERFLOW": "20",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "APPLICATION_RECORDER_TOPIC": "adapters.pg_recorder:LockedFunctionRecorder",
    }


def sqlite_env(path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


def open_event_store(
    database_url: str | None, sqlite_path: Path, *, group_commit: bool = True, vault: Any = None
) -> AttendWise:
    """The application on its event store. PostgreSQL when `database_url` is
    set, else the SQLite file. Fails with `ServiceUnavailable` naming the
    setting when PostgreSQL cannot be reached."""
    env = postgres_env(database_url) if database_url else sqlite_env(sqlite_path)
    decorate = GroupCommitRecorder if (database_url and group_commit) else None
    try:
        mapper = functools.partial(PersonalDataMapper, vault=vault) if vault is not None else None
        app = AttendWise(env=env, recorder_decorator=decorate, mapper_factory=mapper)
        install_append_only_guard(app)
    except (OperationalError, InterfaceError, OSError) as e:
        if database_url:
            raise ServiceUnavailable("PostgreSQL", DATABASE_SETTING, _redact(database_url), e) from e
        raise
    return app


def _redact(url: str) -> str:
    u = urlparse(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url


def _inner(recorder: Any) -> Any:
    return getattr(recorder, "inner", recorder)


def events_table(app: AttendWise) -> str:
    return _inner(app.recorder).events_table_name


def is_postgres(app: AttendWise) -> bool:
    from eventsourcing.postgres import PostgresApplicationRecorder

    return isinstance(_inner(app.recorder), PostgresApplicationRecorder)


def install_append_only_guard(app: AttendWise) -> None:
    """Refuse UPDATE and DELETE of stored events in the database itself.
    (PostgreSQL's recorder installs its triggers when it creates its tables:
    `LockedFunctionRecorder.append_only_statements`.)"""
    if is_postgres(app):
        return
    table = events_table(app)
    with _inner(app.recorder).datastore.transaction(commit=True) as curs:
        for sql in (
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'stored events are append-only: UPDATE refused'); END",
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'stored events are append-only: DELETE refused'); END",
        ):
            curs.execute(sql)


# --------------------------------------------------------------------------
# group commit
# --------------------------------------------------------------------------
@dataclass
class _Pending:
    events: Sequence[StoredEvent]
    done: threading.Event = field(default_factory=threading.Event)
    ids: Sequence[int] | None = None
    error: BaseException | None = None
    lead: bool = False  # handed the committer's role when woken


class GroupCommitRecorder:
    """Wraps an `ApplicationRecorder` so that concurrent `insert_events` calls
    are coalesced into one transaction (one table lock, one fsync).

    The first caller to find no commit in progress becomes the committer: it
    takes everything queued (up to `max_batch` events), inserts it in one
    transaction and wakes each caller with its own notification ids. If the
    batch fails with a uniqueness conflict, each request is retried alone, so
    only the request that really conflicts gets `IntegrityError`; the others
    are committed. Any other failure is given to every caller in the batch.
    After a batch the committer hands its role to the next waiting caller, so
    no caller commits for others for long. Everything else is delegated.
    """

    def __init__(self, inner: ApplicationRecorder, max_batch: int = 500) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._committing = False
        self.batches = 0  # transactions committed, for benchmarks and status
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if any(v is not None for v in kwargs.values()):  # e.g. tracking records: not ours to merge
            return self.inner.insert_events(stored_events, **kwargs)
        me = _Pending(stored_events)
        with self._lock:
            self._queue.append(me)
            me.lead = not self._committing
            self._committing = True
        if not me.lead:
            me.done.wait()
        if me.lead:
            self._commit_until_done(me)
        if me.error is not None:
            raise me.error
        return me.ids

    def _commit_until_done(self, me: _Pending) -> None:
        while True:
            with self._lock:
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0].events) <= self.max_batch):
                    p = self._queue.pop(0)
                    batch.append(p)
                    size += len(p.events)
            self._commit(batch)
            for p in batch:
                if p is not me:
                    p.done.set()
            with self._lock:
                if not self._queue:
                    self._committing = False
                    return
                if me in batch:  # hand over: the next caller commits the rest
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                    return

    def _commit(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            ids = self.inner.insert_events([e for p in batch for e in p.events])
        except IntegrityError as e:
            if len(batch) == 1:
                batch[0].error = e
                return
            for p in batch:  # find the culprit: each alone
                try:
                    p.ids = self.inner.insert_events(p.events)
                except BaseException as alone:  # noqa: BLE001 - handed to its caller
                    p.error = alone
            return
        except BaseException as e:  # noqa: BLE001 - every caller learns it
            for p in batch:
                p.error = e
            return
        offset = 0
        for p in batch:
            p.ids = None if ids is None else ids[offset : offset + len(p.events)]
            offset += len(p.events)


# --------------------------------------------------------------------------
# reading the log
# --------------------------------------------------------------------------
class ApplicationEventLog:
    """`EventLog` over the application's notification log (upcasting applied)."""

    def __init__(self, app: AttendWise) -> None:
        self.app = app
        self._pg = is_postgres(app)
        if self._pg:
            from psycopg.sql import SQL, Identifier

            inner = _inner(app.recorder)
            self._select = SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state FROM {}.{} "
                "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            ).format(Identifier(inner.datastore.schema), Identifier(inner.events_table_name))
            # an event's type is its topic's class path without dots (`_event_type_of`)
            self._scan = SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state FROM {}.{} "
                "WHERE notification_id > %s AND notification_id <= %s "
                "AND replace(split_part(topic, ':', 2), '.', '') = ANY(%s) ORDER BY notification_id"
            ).format(Identifier(inner.datastore.schema), Identifier(inner.events_table_name))

    def read(self, after: int, limit: int) -> list[EventEnvelope]:
        try:
            if self._pg:
                envelopes = self._read_pg(after, limit)
            else:
                notes = self.app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
                envelopes = [to_envelope(self.app, n) for n in notes]
        except (OperationalError, InterfaceError) as e:
            raise ServiceUnavailable("event store", DATABASE_SETTING, "configured database", e) from e
        return self._decrypted(envelopes)

    def scan(self, after: int, upto: int, types: Collection[str]) -> list[EventEnvelope]:
        if upto <= after or not types:
            return []
        try:
            if self._pg:
                rows = self._fetch(self._scan, (after, upto, sorted(types)))
            else:
                inner = _inner(self.app.recorder)
                marks = ", ".join("?" * len(types))
                with inner.datastore.transaction(commit=False) as c:
                    c.execute(f"SELECT rowid, originator_id, originator_version, topic, state "
                              f"FROM {inner.events_table_name} WHERE rowid > ? AND rowid <= ? "
                              f"AND replace(substr(topic, instr(topic, ':') + 1), '.', '') IN ({marks}) "
                              f"ORDER BY rowid", (after, upto, *sorted(types)))
                    rows = [tuple(r) for r in c.fetchall()]
        except (OperationalError, InterfaceError) as e:
            raise ServiceUnavailable("event store", DATABASE_SETTING, "configured database", e) from e
        app = self.app
        if self._pg:  # (the id as text already)
            return self._decrypted([_envelope(app, r[0], r[1], r[2], r[3], r[4]) for r in rows])
        return self._decrypted([_envelope(app, r[0], _uuid(r[1]), r[2], r[3], _bytes(r[4])) for r in rows])

    def _fetch(self, query: Any, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        with _inner(self.app.recorder).datastore.get_connection() as conn:
            # binary results: a stored event's state comes as its bytes, not hex that both sides convert
            with conn.cursor(row_factory=tuple_row, binary=True) as curs:
                curs.execute(query, params, prepare=True)
                return curs.fetchall()

    def _decrypted(self, envelopes: list[EventEnvelope]) -> list[EventEnvelope]:
        if self.app.vault is not None:
            self._decrypt(envelopes)
        return envelopes

    def _decrypt(self, envelopes: list[EventEnvelope]) -> None:
        """Personal fields in clear text, or erased: one key look-up per page."""
        personal = []
        for env in envelopes:
            cls = _event_class_by_name(env)
            fields, subject_attr = personal_fields(cls)
            if fields:
                personal.append((env, cls, subject_of(env.data, subject_attr, env.aggregate_id)))
        if not personal:
            return
        keys = self.app.vault.keys({subject for _, _, subject in personal})
        for env, cls, _ in personal:
            decrypt_state(self.app.vault, cls, env.data, env.aggregate_id, keys, for_envelope=True)

    def _read_pg(self, after: int, limit: int) -> list[EventEnvelope]:
        """The library's `select_notifications` with plain tuple rows: the
        rebuild path reads hundreds of thousands of events."""
        rows = self._fetch(self._select, (after, limit))
        app = self.app
        return [_envelope(app, r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def counts(self) -> dict[str, int]:
        inner = _inner(self.app.recorder)
        try:
            if self._pg:
                from psycopg.sql import SQL, Identifier

                rows = self._fetch(SQL("SELECT topic, count(*) FROM {}.{} GROUP BY topic").format(
                    Identifier(inner.datastore.schema), Identifier(inner.events_table_name)), ())
            else:
                with inner.datastore.transaction(commit=False) as c:
                    c.execute(f"SELECT topic, count(*) FROM {inner.events_table_name} GROUP BY topic")
                    rows = [tuple(r) for r in c.fetchall()]
        except (OperationalError, InterfaceError) as e:
            raise ServiceUnavailable("event store", DATABASE_SETTING, "configured database", e) from e
        counts: Counter[str] = Counter()
        for topic, n in rows:
            counts[_event_type_of(topic)] += int(n)
        return dict(counts)

    def raw(self, after: int, limit: int) -> list[StoredRow]:
        """Stored events exactly as the database holds them (encrypted, not
        upcast): what the audit seals cover."""
        if self._pg:
            return [StoredRow(r[0], str(r[1]), r[2], r[3], _bytes(r[4])) for r in self._fetch(self._select, (after, limit))]
        notes = self.app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        return [StoredRow(n.id, str(n.originator_id), n.originator_version, n.topic, _bytes(n.state)) for n in notes]

    def raw_aggregate(self, aggregate_id: str) -> list[StoredRow]:
        """One aggregate's stored events, by version, as `raw` gives them."""
        inner = _inner(self.app.recorder)
        if self._pg:
            from psycopg.sql import SQL, Identifier

            query = SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
                        "WHERE originator_id = %s ORDER BY originator_version").format(
                Identifier(inner.datastore.schema), Identifier(inner.events_table_name))
            rows = self._fetch(query, (_uuid(aggregate_id),))
        else:
            with inner.datastore.transaction(commit=False) as c:
                c.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {inner.events_table_name} "
                          f"WHERE originator_id = ? ORDER BY originator_version", (_uuid(aggregate_id).hex,))
                rows = [tuple(r) for r in c.fetchall()]
        return [StoredRow(r[0], str(_uuid(r[1])), r[2], r[3], _bytes(r[4])) for r in rows]


def _bytes(value: Any) -> bytes:
    """Stored state as bytes, even when someone wrote text into the column."""
    return value.encode() if isinstance(value, str) else bytes(value)


@functools.lru_cache(maxsize=512)
def _context_of(topic: str) -> str:
    module, _, qualname = topic.partition(":")
    owner = getattr(importlib.import_module(module), qualname.split(".")[0], None)
    return getattr(owner, "CONTEXT", "core")


@functools.lru_cache(maxsize=512)
def _event_type_of(topic: str) -> str:
    return topic.partition(":")[2].replace(".", "")


@functools.lru_cache(maxsize=512)
def _event_class(topic: str) -> Any:
    module, _, qualname = topic.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_TOPICS: dict[tuple[str, str], str] = {}


def _event_class_by_name(env: EventEnvelope) -> Any:
    return _event_class(_TOPICS[(env.context, env.event_type)])


def to_envelope(app: AttendWise, n: Notification) -> EventEnvelope:
    """Decode a stored event straight to an envelope: the library's JSON
    format and upcasters, without building the domain event object (the
    rebuild path decodes hundreds of thousands of events)."""
    return _envelope(app, n.id, n.originator_id, n.originator_version, n.topic, n.state)


@functools.lru_cache(maxsize=512)
def _topic(topic: str) -> tuple[Any, int, str, str]:
    """A topic's event class, its current schema version, context and event type."""
    cls = _event_class(topic)
    context, event_type = _context_of(topic), _event_type_of(topic)
    _TOPICS.setdefault((context, event_type), topic)
    return cls, getattr(cls, "class_version", 1), context, event_type


def _envelope(app: AttendWise, position: int, originator_id: Any, originator_version: int, topic: str,
              state: bytes) -> EventEnvelope:
    """`to_envelope` of a row's columns (`originator_id` a UUID or its text)."""
    cls, version, context, event_type = _topic(topic)
    data: dict[str, Any] = orjson.loads(state)
    at = data.pop("class_version", 1)
    if at < version:  # upcasters see what the library would give them
        names = app.mapper.transcoder.names  # type: ignore[attr-defined]
        state_ = {k: _restore(v, names) for k, v in data.items()}
        while at < version:
            getattr(cls, f"upcast_v{at}_v{at + 1}")(state_)
            at += 1
        data = {k: _plain(v) for k, v in state_.items()}
        meta = data.pop("meta", None) or {}
        ts = data.pop("timestamp", "")
    else:
        meta = data.pop("meta", None) or {}  # (plain text: `stamp` wrote it)
        ts = data.pop("timestamp", "")
        if ts.__class__ is dict:
            ts = _plain_raw(ts)
        for k, v in data.items():  # (values replaced in place: no new dict per event)
            if v.__class__ is dict or v.__class__ is list:
                data[k] = _plain_raw(v)
    data.pop("originator_topic", None)
    event_id = meta.get("event_id") or str(uuid.uuid5(_uuid(originator_id), str(originator_version)))
    return EventEnvelope.trusted(
        position, event_id, event_type, context, str(originator_id), originator_version, ts, version,
        meta.get("actor", "unknown"), meta.get("command_id", ""), data)


def _plain_raw(v: Any) -> Any:
    """The library's encoded custom types, straight to their JSON-friendly text."""
    if isinstance(v, dict):
        if len(v) == 2 and "_type_" in v and "_data_" in v:
            kind, d = v["_type_"], v["_data_"]
            if kind == "uuid_hex":
                return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:]}"
            return d  # datetime_iso, decimal_str: already text
        return {k: _plain_raw(x) if x.__class__ is dict or x.__class__ is list else x for k, x in v.items()}
    if isinstance(v, list):
        return [_plain_raw(x) if x.__class__ is dict or x.__class__ is list else x for x in v]
    return v


def _restore(v: Any, names: dict[str, Any]) -> Any:
    """What the library's JSON transcoder decodes `{"_type_", "_data_"}` into."""
    if isinstance(v, dict):
        if len(v) == 2 and "_type_" in v and "_data_" in v:
            return names[v["_type_"]].decode(v["_data_"])
        return {k: _restore(x, names) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x, names) for x in v]
    return v


def _uuid(v: Any) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


