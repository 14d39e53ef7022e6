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

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg.sql import SQL, Identifier


class LockedFunctionRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.locked_insert_function = f"{self.events_table_name}_insert_locked"
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{fn}(events {schema}.{event}[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "  SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "  LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "  NOTIFY {channel}; "
            "  RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "    SELECT originator_id, originator_version, topic, state FROM unnest(events) "
            "    RETURNING notification_id; "
            "END $BODY$"
        ).format(
            schema=Identifier(self.datastore.schema),
            fn=Identifier(self.locked_insert_function),
            event=Identifier(self.stored_event_type_name),
            lock_timeout=SQL(str(self.datastore.lock_timeout)),
            table=Identifier(self.events_table_name),
            channel=Identifier(self.channel_name),
        ))
        self.sql_call_locked_insert = SQL("SELECT * FROM {schema}.{fn}(%s)").format(
            schema=Identifier(self.datastore.schema), fn=Identifier(self.locked_insert_function))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events or any(v is not None for v in kwargs.values()):  # e.g. tracking: the library's path
            return super().insert_events(stored_events, **kwargs)
        rows = [self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
                for e in stored_events]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.sql_call_locked_insert, (rows,), prepare=True)
            return [r[self.locked_insert_function] for r in curs.fetchall()]
