"""A PostgreSQL application recorder that appends in one round trip, keeping
the library's ordering guarantee.

`eventsourcing`'s PostgreSQL recorder sends BEGIN, SET lock_timeout, LOCK
TABLE, NOTIFY, INSERT and COMMIT through a pipeline (several round trips per
save). Its DB-functions mode needs one, but drops the table lock, and a reader
tailing "position > last seen" can then miss an event committed late with a
lower notification id. This recorder calls one server-side function that
takes the same EXCLUSIVE lock, notifies and inserts; in autocommit the lock is
held until the commit is durable, so commit order still equals
notification-id order, at one round trip per save (or per group-commit batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from adapters.errors import ServiceUnavailable

# Seconds one try waits for a pooled connection. The library makes ten tries of
# every read and write and, by default, waits its connect timeout (5 s) in
# each: with PostgreSQL down a command would wait 50 s for its error.
POOL_WAIT = 0.5


class LockedFunctionRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        datastore.pool.timeout = POOL_WAIT
        where = datastore.pool.kwargs or {}
        self._where = f"{where.get('host')}:{where.get('port')}/{where.get('dbname')}"
        self.locked_insert_function = f"{self.events_table_name}_insert_locked"
        self.sql_select_events_of_many = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name))
        self._rendered: dict[str, str] = {}  # attribute name -> its statement as text
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{fn}(ids uuid[], versions bigint[], topics text[], states bytea[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "  SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "  LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "  NOTIFY {channel}; "
            "  RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "    SELECT * FROM unnest(ids, versions, topics, states) "
            "    RETURNING notification_id; "
            "END $BODY$"
        ).format(
            schema=Identifier(self.datastore.schema),
            fn=Identifier(self.locked_insert_function),
            lock_timeout=SQL(str(self.datastore.lock_timeout)),
            table=Identifier(self.events_table_name),
            channel=Identifier(self.channel_name),
        ))
        self.sql_call_locked_insert = SQL("SELECT * FROM {schema}.{fn}(%s, %s, %s, %s)").format(
            schema=Identifier(self.datastore.schema), fn=Identifier(self.locked_insert_function))

    SCHEMA_LOCK = 70_410_001  # advisory lock id: one process at a time creates the schema

    def create_table(self) -> None:
        """The library's DDL, plus the append-only triggers, under an advisory
        lock: processes starting together (API, relay, projectors) would
        otherwise race on CREATE OR REPLACE ("tuple concurrently updated")."""
        with self.datastore.get_connection() as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock(%s)", (self.SCHEMA_LOCK,))
            try:
                super().create_table()
                with self.datastore.transaction(commit=True) as curs:
                    for statement in self.append_only_statements():
                        curs.execute(statement)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (self.SCHEMA_LOCK,))

    def append_only_statements(self) -> list[str]:
        """Refuse UPDATE, DELETE and TRUNCATE of stored events in the database
        itself, so no code path, ours or a script's, rewrites history."""
        table = self.events_table_name
        return [
            "CREATE OR REPLACE FUNCTION attendwise_refuse_event_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
            "'stored events are append-only: % refused on %', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'insufficient_privilege'; END $$",
            f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION attendwise_refuse_event_change()",
            f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION attendwise_refuse_event_change()",
        ]

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The library's errors for a database it could not use (after its
        tries) as `ServiceUnavailable` naming the setting, as every adapter
        reports an unreachable service (the API answers 503 with Retry-After)."""
        try:
            yield
        except (InterfaceError, OperationalError) as e:
            raise ServiceUnavailable("PostgreSQL", "ATTENDWISE_DATABASE_URL", self._where, e) from e

    def select_events(self, *args: Any, **kwargs: Any) -> Any:
        with self._unavailable():
            return super().select_events(*args, **kwargs)

    def max_notification_id(self) -> int | None:
        with self._unavailable():
            return super().max_notification_id()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        with self._unavailable():
            return self._insert_locked(stored_events, **kwargs)

    # (not `_insert_events`: the library's own method of that name is called by its `insert_events`)
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_locked(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events or any(v is not None for v in kwargs.values()):  # e.g. tracking: the library's path
            return super().insert_events(stored_events, **kwargs)
        columns = ([e.originator_id for e in stored_events], [e.originator_version for e in stored_events],
                   [e.topic for e in stored_events], [e.state for e in stored_events])
        with self.datastore.get_connection() as conn, conn.cursor(binary=True) as curs:
            curs.execute(self._render("sql_call_locked_insert", conn), columns, prepare=True)
            return [r[self.locked_insert_function] for r in curs.fetchall()]

    def _render(self, name: str, conn: Any) -> str:
        """The composed statement held by attribute `name`, as text, rendered
        once: psycopg parses composed SQL again on every call, a plain string
        once (it caches the parse)."""
        text = self._rendered.get(name)
        if text is None:
            text = self._rendered[name] = getattr(self, name).as_string(conn)
        return text

    def select_events_of_many(self, originator_ids: Sequence[Any]) -> list[StoredEvent]:
        """The stored events of several aggregates in one query, each
        aggregate's in version order (a command that needs three aggregates
        pays one round trip, not three)."""
        with self._unavailable():
            return self._select_events_of_many(originator_ids)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's reads
    def _select_events_of_many(self, originator_ids: Sequence[Any]) -> list[StoredEvent]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._render("sql_select_events_of_many", conn), [list(originator_ids)], prepare=True)
            return [StoredEvent(originator_id=row["originator_id"], originator_version=row["originator_version"],
                                topic=row["topic"], state=bytes(row["state"])) for row in curs.fetchall()]
