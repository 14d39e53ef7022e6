"""Connections for the small stores that live beside the event log
(credentials, personal-data keys, idempotency keys): one SQLite connection
per thread, or a PostgreSQL pool whose failures name the setting."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters.errors import ServiceUnavailable


@contextmanager
def sqlite_transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Cursor]:
    """One transaction on an autocommit connection (by default holding the
    write lock): commits on leaving, rolls back on an exception."""
    conn.execute(begin)
    try:
        yield conn.cursor()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLiteFile:
    """A WAL-mode SQLite file, one autocommit connection per thread."""

    param = "?"

    def __init__(self, path: Path, *ddl: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        for statement in ddl:
            self.run(statement)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
        return c

    def run(self, sql: str, params: Any = ()) -> list[tuple]:
        return self._conn().execute(sql, params).fetchall()

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        """One statement for each row, all in one transaction."""
        with sqlite_transaction(self._conn()) as cur:
            cur.executemany(sql, rows)


# Seconds a statement waits for a pooled connection: with PostgreSQL down, each
# store a request touches would otherwise hold it 10 s before its 503. Pooled
# connections are checked before use, so after a restart the dead ones are
# replaced instead of failing a request each.
POOL_WAIT = 3.0


class PostgresPool:
    """A small autocommit pool. `ddl` runs once, in one implicit transaction
    under an advisory lock, so processes starting together do not race."""

    param = "%s"

    def __init__(self, database_url: str, lock_id: int, *ddl: str, setting: str = "ATTENDWISE_DATABASE_URL") -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._errors = (psycopg.OperationalError,)
        self._setting, self._where = setting, database_url.split("@")[-1]
        try:
            self.pool = ConnectionPool(database_url, min_size=1, max_size=4, open=True, timeout=POOL_WAIT,
                                       check=ConnectionPool.check_connection,
                                       kwargs={"autocommit": True, "connect_timeout": 5})
            self.pool.wait(timeout=10)
        except Exception as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("PostgreSQL", setting, self._where, e) from e
        if ddl:
            self.run(f"SELECT pg_advisory_xact_lock({int(lock_id)}); " + "; ".join(ddl), None)

    def run(self, sql: str, params: Any = ()) -> list[tuple]:
        try:
            with self.pool.connection() as c:
                cur = c.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except self._errors as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._where, e) from e

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        """One statement for each row, all in one transaction (pipelined: one
        round trip, and the statement is parsed and planned once)."""
        try:
            with self.pool.connection() as c, c.transaction():
                c.cursor().executemany(sql, rows)
        except self._errors as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._where, e) from e

    def close(self) -> None:
        self.pool.close()
