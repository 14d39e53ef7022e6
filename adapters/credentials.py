"""Password hashes live outside the event log (never in events): a small
table beside it, behind the `CredentialStore` port, SQLite or PostgreSQL.
Hashing is argon2id (argon2-cffi)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from adapters.errors import ServiceUnavailable

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters
_DUMMY = _hasher.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (no user-enumeration by timing)."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class CredentialStore(Protocol):
    """Port. `set` replaces a user's hash; `get` returns it or None; `delete`
    removes it (idempotent)."""

    def set(self, user_id: str, password_hash: str) -> None: ...

    def get(self, user_id: str) -> str | None: ...

    def delete(self, user_id: str) -> None: ...


class SQLiteCredentialStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._conn().execute("CREATE TABLE IF NOT EXISTS credentials (user_id TEXT PRIMARY KEY, hash TEXT NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
        return c

    def set(self, user_id: str, password_hash: str) -> None:
        self._conn().execute("INSERT INTO credentials VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash",
                             (user_id, password_hash))

    def get(self, user_id: str) -> str | None:
        row = self._conn().execute("SELECT hash FROM credentials WHERE user_id = ?", (user_id,)).fetchone()
        return row[0] if row else None

    def delete(self, user_id: str) -> None:
        self._conn().execute("DELETE FROM credentials WHERE user_id = ?", (user_id,))


class PostgresCredentialStore:
    def __init__(self, database_url: str, setting: str = "ATTENDWISE_DATABASE_URL") -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._errors = (psycopg.OperationalError,)
        self._setting, self._where = setting, database_url.split("@")[-1]
        try:
            self.pool = ConnectionPool(database_url, min_size=1, max_size=4, open=True, timeout=10,
                                       kwargs={"autocommit": True, "connect_timeout": 5})
            self.pool.wait(timeout=10)
            self._run("SELECT pg_advisory_xact_lock(4243); "  # one implicit transaction
                      "CREATE TABLE IF NOT EXISTS credentials (user_id text PRIMARY KEY, hash text NOT NULL)")
        except Exception as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("PostgreSQL", setting, self._where, e) from e

    def _run(self, sql: str, params: tuple | None = None) -> list[tuple]:
        try:
            with self.pool.connection() as c:
                cur = c.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except self._errors as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._where, e) from e

    def set(self, user_id: str, password_hash: str) -> None:
        self._run("INSERT INTO credentials VALUES (%s, %s) ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash",
                  (user_id, password_hash))

    def get(self, user_id: str) -> str | None:
        rows = self._run("SELECT hash FROM credentials WHERE user_id = %s", (user_id,))
        return rows[0][0] if rows else None

    def delete(self, user_id: str) -> None:
        self._run("DELETE FROM credentials WHERE user_id = %s", (user_id,))

    def close(self) -> None:
        self.pool.close()
