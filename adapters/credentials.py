"""Password hashes live outside the event log (never in events): a small
table beside it, behind the `CredentialStore` port, SQLite or PostgreSQL.
Hashing is argon2id (argon2-cffi)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from adapters.sql import PostgresPool, SQLiteFile

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


_DDL = "CREATE TABLE IF NOT EXISTS credentials (user_id TEXT PRIMARY KEY, hash TEXT NOT NULL)"


class SqlCredentialStore:
    """`CredentialStore` on an SQLite file or a PostgreSQL pool."""

    def __init__(self, db: SQLiteFile | PostgresPool) -> None:
        self.db, p = db, db.param
        self._set = (f"INSERT INTO credentials VALUES ({p}, {p}) "
                     "ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash")
        self._get = f"SELECT hash FROM credentials WHERE user_id = {p}"
        self._delete = f"DELETE FROM credentials WHERE user_id = {p}"

    def set(self, user_id: str, password_hash: str) -> None:
        self.db.run(self._set, (user_id, password_hash))

    def get(self, user_id: str) -> str | None:
        rows = self.db.run(self._get, (user_id,))
        return rows[0][0] if rows else None

    def delete(self, user_id: str) -> None:
        self.db.run(self._delete, (user_id,))


def SQLiteCredentialStore(path: Path) -> SqlCredentialStore:  # noqa: N802 - reads like the class it makes
    return SqlCredentialStore(SQLiteFile(path, _DDL))


def PostgresCredentialStore(database_url: str) -> SqlCredentialStore:  # noqa: N802
    return SqlCredentialStore(PostgresPool(database_url, 4243, _DDL))
