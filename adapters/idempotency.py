"""Idempotency keys: the first response to a command is kept, and a retry
with the same `Idempotency-Key` gets it back instead of running again.

Port `IdempotencyStore`; SQLite and PostgreSQL adapters. `reserve` is atomic
across processes (INSERT ... ON CONFLICT DO NOTHING), so two concurrent
retries cannot both run the command.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from adapters.errors import ServiceUnavailable

IN_PROGRESS_TTL = 120.0  # seconds before an abandoned reservation (a crashed process) may be taken again
KEEP = 24 * 3600.0  # how long a response is replayed


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    status: int | None  # None: the first request is still running
    body: bytes
    content_type: str


class IdempotencyStore(Protocol):
    """Port. `reserve(key, fingerprint)` returns None when the caller now owns
    the key (and must `complete` or `release` it), else what is stored."""

    def reserve(self, key: str, fingerprint: str) -> Stored | None: ...

    def complete(self, key: str, status: int, body: bytes, content_type: str) -> None: ...

    def release(self, key: str) -> None: ...


_DDL = ("CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
        "status INTEGER, body BYTEA, content_type TEXT, created REAL NOT NULL)")


class _SqlIdempotency:
    p = "?"

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def reserve(self, key: str, fingerprint: str) -> Stored | None:
        now = time.time()
        p = self.p
        self._exec(f"DELETE FROM idempotency WHERE key = {p} AND ((status IS NULL AND created < {p}) OR created < {p})",
                   (key, now - IN_PROGRESS_TTL, now - KEEP))
        taken = self._exec(f"INSERT INTO idempotency (key, fingerprint, created) VALUES ({p}, {p}, {p}) "
                           "ON CONFLICT (key) DO NOTHING RETURNING key", (key, fingerprint, now))
        if taken:
            return None
        rows = self._exec(f"SELECT fingerprint, status, body, content_type FROM idempotency WHERE key = {p}", (key,))
        if not rows:  # released meanwhile: try once more
            return self.reserve(key, fingerprint)
        fp, status, body, ctype = rows[0]
        return Stored(fp, status, bytes(body or b""), ctype or "application/json")

    def complete(self, key: str, status: int, body: bytes, content_type: str) -> None:
        p = self.p
        self._exec(f"UPDATE idempotency SET status = {p}, body = {p}, content_type = {p} WHERE key = {p}",
                   (status, body, content_type, key))

    def release(self, key: str) -> None:
        self._exec(f"DELETE FROM idempotency WHERE key = {self.p} AND status IS NULL", (key,))


class SQLiteIdempotencyStore(_SqlIdempotency):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._exec(_DDL.replace("BYTEA", "BLOB"))

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
        return c.execute(sql, params).fetchall()


class PostgresIdempotencyStore(_SqlIdempotency):
    p = "%s"

    def __init__(self, database_url: str, setting: str = "ATTENDWISE_DATABASE_URL") -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._errors = (psycopg.OperationalError,)
        self._setting, self._where = setting, database_url.split("@")[-1]
        try:
            self.pool = ConnectionPool(database_url, min_size=1, max_size=4, open=True, timeout=10,
                                       kwargs={"autocommit": True, "connect_timeout": 5})
            self.pool.wait(timeout=10)
        except Exception as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("PostgreSQL", setting, self._where, e) from e
        # one implicit transaction: processes starting together do not race
        self._exec("SELECT pg_advisory_xact_lock(4244); " + _DDL.replace("REAL", "DOUBLE PRECISION"))

    def _exec(self, sql: str, params: tuple | None = None) -> list[tuple]:
        try:
            with self.pool.connection() as c:
                cur = c.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except self._errors as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._where, e) from e


def fingerprint(method: str, path: str, principal: str, body: bytes) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([method, path, principal]).encode() + b"\0" + body).hexdigest()
