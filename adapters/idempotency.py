"""Idempotency keys: the first response to a command is kept, and a retry
with the same `Idempotency-Key` gets it back instead of running again.

Port `IdempotencyStore`; SQLite and PostgreSQL adapters. `reserve` is atomic
across processes (INSERT ... ON CONFLICT DO NOTHING), so two concurrent
retries cannot both run the command.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from adapters.sql import PostgresPool, SQLiteFile

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


class SqlIdempotencyStore:
    """`IdempotencyStore` on an SQLite file or a PostgreSQL pool."""

    def __init__(self, db: SQLiteFile | PostgresPool) -> None:
        self.db = db
        self.p = db.param

    def reserve(self, key: str, fingerprint: str) -> Stored | None:
        now = time.time()
        p = self.p
        self.db.run(f"DELETE FROM idempotency WHERE key = {p} AND ((status IS NULL AND created < {p}) OR created < {p})",
                    (key, now - IN_PROGRESS_TTL, now - KEEP))
        taken = self.db.run(f"INSERT INTO idempotency (key, fingerprint, created) VALUES ({p}, {p}, {p}) "
                            "ON CONFLICT (key) DO NOTHING RETURNING key", (key, fingerprint, now))
        if taken:
            return None
        rows = self.db.run(f"SELECT fingerprint, status, body, content_type FROM idempotency WHERE key = {p}", (key,))
        if not rows:  # released meanwhile: try once more
            return self.reserve(key, fingerprint)
        fp, status, body, ctype = rows[0]
        return Stored(fp, status, bytes(body or b""), ctype or "application/json")

    def complete(self, key: str, status: int, body: bytes, content_type: str) -> None:
        p = self.p
        self.db.run(f"UPDATE idempotency SET status = {p}, body = {p}, content_type = {p} WHERE key = {p}",
                    (status, body, content_type, key))

    def release(self, key: str) -> None:
        self.db.run(f"DELETE FROM idempotency WHERE key = {self.p} AND status IS NULL", (key,))


def SQLiteIdempotencyStore(path: Path) -> SqlIdempotencyStore:  # noqa: N802 - reads like the class it makes
    return SqlIdempotencyStore(SQLiteFile(path, _DDL.replace("BYTEA", "BLOB")))


def PostgresIdempotencyStore(database_url: str) -> SqlIdempotencyStore:  # noqa: N802
    return SqlIdempotencyStore(PostgresPool(database_url, 4244, _DDL.replace("REAL", "DOUBLE PRECISION")))


def fingerprint(method: str, path: str, principal: str, body: bytes) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([method, path, principal]).encode() + b"\0" + body).hexdigest()
