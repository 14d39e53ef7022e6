"""Personal data in events, encrypted with a key per person kept outside the
log (crypto-shredding). Destroying the key erases the data everywhere the log
is copied, while the events themselves stay, in order, replayable.

An event class lists its personal fields in `PERSONAL` and names the person
in `SUBJECT` (an attribute holding their user id). Those also in `SECRET`
(face templates) are decrypted only for the aggregate, never in envelopes. Values are stored as
`enc:v1:<base64(nonce | AES-256-GCM ciphertext)>`, bound to the person and
the field; without the key they read back as `ERASED`.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent

from adapters.sql import PostgresPool, SQLiteFile

ERASED = "[erased]"
PREFIX = "enc:v1:"
CACHE_SECONDS = 5.0  # a destroyed key may be used by other processes for at most this long


class KeyVault(Protocol):
    """Port. `keys(ids, create)` returns each person's key (creating missing
    ones when asked); `destroy(id)` deletes it for ever."""

    def keys(self, user_ids: Iterable[str], create: bool = False) -> dict[str, bytes]: ...

    def destroy(self, user_id: str) -> None: ...


_DDL = "CREATE TABLE IF NOT EXISTS user_keys (user_id TEXT PRIMARY KEY, key BYTEA NOT NULL)"


class SqlKeyVault:
    """`KeyVault` on an SQLite file or a PostgreSQL pool, with a short cache."""

    def __init__(self, db: SQLiteFile | PostgresPool) -> None:
        self.db, self.p = db, db.param
        self._cache: dict[str, tuple[bytes | None, float]] = {}
        self._lock = threading.Lock()

    def _load(self, ids: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join([self.p] * len(chunk))
            out.update({r[0]: bytes(r[1]) for r in
                        self.db.run(f"SELECT user_id, key FROM user_keys WHERE user_id IN ({marks})", tuple(chunk))})
        return out

    def keys(self, user_ids: Iterable[str], create: bool = False) -> dict[str, bytes]:
        now = time.monotonic()
        out: dict[str, bytes] = {}
        missing = []
        with self._lock:
            for i in sorted(set(user_ids)):
                hit = self._cache.get(i)
                if hit and now - hit[1] < CACHE_SECONDS and (hit[0] is not None or not create):
                    if hit[0] is not None:
                        out[i] = hit[0]
                else:
                    missing.append(i)
        if missing:
            found = self._load(missing)
            for i in missing:
                if i not in found and create:
                    self.db.run(f"INSERT INTO user_keys VALUES ({self.p}, {self.p}) ON CONFLICT (user_id) DO NOTHING",
                                (i, os.urandom(32)))
                    found.update(self._load([i]))
            with self._lock:
                for i in missing:
                    self._cache[i] = (found.get(i), now)
            out.update(found)
        return out

    def destroy(self, user_id: str) -> None:
        self.db.run(f"DELETE FROM user_keys WHERE user_id = {self.p}", (user_id,))
        with self._lock:
            self._cache[user_id] = (None, time.monotonic())


def SQLiteKeyVault(path: Path) -> SqlKeyVault:  # noqa: N802 - reads like the class it makes
    return SqlKeyVault(SQLiteFile(path, _DDL.replace("BYTEA", "BLOB")))


def PostgresKeyVault(database_url: str) -> SqlKeyVault:  # noqa: N802
    return SqlKeyVault(PostgresPool(database_url, 4245, _DDL))


def _aad(subject: str, field: str) -> bytes:
    return f"{subject}/{field}".encode()


def encrypt(key: bytes, subject: str, field: str, value: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, value.encode(), _aad(subject, field))
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt(key: bytes | None, subject: str, field: str, value: Any) -> Any:
    if not (isinstance(value, str) and value.startswith(PREFIX)):
        return value  # written before encryption, or not personal
    if key is None:
        return ERASED
    raw = base64.b64decode(value[len(PREFIX):])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], _aad(subject, field)).decode()
    except InvalidTag:
        return ERASED


def personal_fields(event_class: type) -> tuple[tuple[str, ...], str]:
    return getattr(event_class, "PERSONAL", ()), getattr(event_class, "SUBJECT", "originator_id")


def subject_of(state: dict[str, Any], subject_attr: str, originator_id: Any) -> str:
    return str(originator_id if subject_attr == "originator_id" else state[subject_attr])


def decrypt_state(vault: KeyVault, event_class: type, state: dict[str, Any], originator_id: Any,
                  keys: dict[str, bytes] | None = None, for_envelope: bool = False) -> None:
    """Decrypt an event's personal fields in place (ERASED without a key).
    For an envelope (projections, the bus, auditors) fields the class lists
    in `SECRET` (biometric templates) stay sealed: only the aggregate reads them."""
    fields, subject_attr = personal_fields(event_class)
    if for_envelope:
        fields = tuple(f for f in fields if f not in getattr(event_class, "SECRET", ()))
    if not fields:
        return
    subject = subject_of(state, subject_attr, originator_id)
    key = (keys if keys is not None else vault.keys([subject])).get(subject)
    for f in fields:
        if f in state:
            state[f] = decrypt(key, subject, f, state[f])


class PersonalDataMapper(Mapper):
    """The library's mapper, encrypting `PERSONAL` fields on the way in and
    decrypting them on the way out."""

    def __init__(self, *args: Any, vault: KeyVault, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vault = vault

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        fields, subject_attr = personal_fields(type(domain_event))
        if not fields:
            return super().to_stored_event(domain_event)
        state = vars(domain_event)
        subject = subject_of(state, subject_attr, domain_event.originator_id)
        key = self.vault.keys([subject], create=True)[subject]
        sealed = {f: encrypt(key, subject, f, state[f]) for f in fields if isinstance(state.get(f), str)}
        original = {f: state[f] for f in sealed}
        state.update(sealed)  # the event object is frozen; its __dict__ is swapped back below
        try:
            return super().to_stored_event(domain_event)
        finally:
            state.update(original)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        ev = super().to_domain_event(stored_event)
        decrypt_state(self.vault, type(ev), ev.__dict__, ev.originator_id)
        return ev
