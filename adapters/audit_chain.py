"""Seals and signed checkpoints over the stored event log (the rules are in
`domain/audit.py`).

`Sealer.seal()` reads the stored events past the last seal, in log order,
and records each one's content digest, chain hash and aggregate link; then, every
`CHECKPOINT_EVERY` events (and at least once per run that sealed anything),
a checkpoint: the chain hash at that position signed with the platform's
active Ed25519 key. Sealing is deterministic, so two sealers at once write
the same rows (`ON CONFLICT DO NOTHING`). Seals live beside the log: in
PostgreSQL's database, or `audit.sqlite3` in embedded mode.

`verify()` walks the log and the seals together and reports what was
altered, removed, inserted or reordered, and any checkpoint that does not
match the chain or whose signature fails. `verify_aggregate()` checks one
aggregate's events against its own chain of seals, without walking the log.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature

from adapters.sql import PostgresPool, SQLiteFile
from adapters.tokens import Keyring
from domain.audit import (GENESIS, Finding, Seal, StoredRow, checkpoint_message, compare, compare_aggregate,
                          seal_rows)

CHECKPOINT_EVERY = 1000
_DDL = (
    "CREATE TABLE IF NOT EXISTS audit_seals (position BIGINT PRIMARY KEY, content TEXT NOT NULL, chain TEXT NOT NULL, "
    "aggregate TEXT, version BIGINT, link TEXT)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (position BIGINT PRIMARY KEY, chain TEXT NOT NULL, "
    "kid TEXT NOT NULL, signature TEXT NOT NULL, signed_at TEXT NOT NULL)",
)
_AGGREGATE_COLUMNS = (("aggregate", "TEXT"), ("version", "BIGINT"), ("link", "TEXT"))  # added after the first release
_SEAL = "position, content, chain, aggregate, version, link"


@dataclass(frozen=True)
class Checkpoint:
    position: int
    chain: str
    kid: str
    signature: str  # base64url Ed25519 over `checkpoint_message(position, chain)`
    signed_at: str

    def as_dict(self) -> dict[str, object]:
        return {"position": self.position, "chain": self.chain, "kid": self.kid, "signature": self.signature,
                "signed_at": self.signed_at}


@dataclass
class Report:
    events: int = 0
    sealed: int = 0  # of them, sealed so far
    sealed_head: int = 0
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    unverifiable: list[int] = field(default_factory=list)  # checkpoints signed by a retired key

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: f.position) if self.findings else None


class AuditSeals:
    def __init__(self, db: SQLiteFile | PostgresPool) -> None:
        self.db, self.p = db, db.param
        if isinstance(db, SQLiteFile):
            have = {r[1] for r in db.run("PRAGMA table_info(audit_seals)")}
            for column, kind in _AGGREGATE_COLUMNS:
                if column not in have:
                    db.run(f"ALTER TABLE audit_seals ADD COLUMN {column} {kind}")
        else:
            for column, kind in _AGGREGATE_COLUMNS:
                db.run(f"ALTER TABLE audit_seals ADD COLUMN IF NOT EXISTS {column} {kind}")
        db.run("CREATE INDEX IF NOT EXISTS audit_seals_aggregate ON audit_seals (aggregate, version)")

    def head(self) -> tuple[int, str]:
        rows = self.db.run("SELECT position, chain FROM audit_seals ORDER BY position DESC LIMIT 1")
        return (int(rows[0][0]), rows[0][1]) if rows else (0, GENESIS)

    def add(self, seals: list[Seal]) -> None:
        """Idempotent: a seal already there is left as it is. All or none."""
        values = ", ".join([self.p] * 6)
        self.db.run_many(f"INSERT INTO audit_seals ({_SEAL}) VALUES ({values}) ON CONFLICT DO NOTHING",
                         [(s.position, s.content, s.chain, s.aggregate, s.version, s.link) for s in seals])

    def seals(self, page: int = 5000) -> Iterator[Seal]:
        after = 0
        while True:
            rows = self.db.run(f"SELECT {_SEAL} FROM audit_seals WHERE position > {self.p} "
                               f"ORDER BY position LIMIT {int(page)}", (after,))
            if not rows:
                return
            yield from map(_seal, rows)
            after = int(rows[-1][0])

    def seals_of(self, aggregate: str) -> list[Seal]:
        """One aggregate's seals, by version."""
        return [_seal(r) for r in self.db.run(f"SELECT {_SEAL} FROM audit_seals WHERE aggregate = {self.p} "
                                              f"ORDER BY version", (aggregate,))]

    def last_links(self, aggregates: set[str]) -> dict[str, str]:
        """Each aggregate's link at its highest sealed version (those with none are left out)."""
        out: dict[str, str] = {}
        ids = sorted(aggregates)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ", ".join([self.p] * len(part))
            out.update(self.db.run(
                f"SELECT aggregate, link FROM audit_seals a WHERE aggregate IN ({marks}) AND link IS NOT NULL AND "
                f"version = (SELECT MAX(version) FROM audit_seals b WHERE b.aggregate = a.aggregate "
                f"AND b.link IS NOT NULL)", tuple(part)))
        return out

    def chain_at(self, position: int) -> str | None:
        rows = self.db.run(f"SELECT chain FROM audit_seals WHERE position = {self.p}", (position,))
        return rows[0][0] if rows else None

    def add_checkpoint(self, c: Checkpoint) -> None:
        self.db.run(f"INSERT INTO audit_checkpoints (position, chain, kid, signature, signed_at) VALUES "
                    f"({self.p}, {self.p}, {self.p}, {self.p}, {self.p}) ON CONFLICT DO NOTHING",
                    (c.position, c.chain, c.kid, c.signature, c.signed_at))

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(int(r[0]), r[1], r[2], r[3], r[4]) for r in
                self.db.run("SELECT position, chain, kid, signature, signed_at FROM audit_checkpoints ORDER BY position")]

    def last_checkpoint(self) -> int:
        rows = self.db.run("SELECT MAX(position) FROM audit_checkpoints")
        return int(rows[0][0] or 0)


def _seal(r: tuple) -> Seal:
    return Seal(int(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4]), r[5])


def sqlite_seals(path: object) -> AuditSeals:
    return AuditSeals(SQLiteFile(path, *_DDL))  # type: ignore[arg-type]


def postgres_seals(database_url: str) -> AuditSeals:
    return AuditSeals(PostgresPool(database_url, 4251, *_DDL))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    def __init__(self, read_raw: Callable[[int, int], list[StoredRow]], seals: AuditSeals, keyring: Keyring,
                 checkpoint_every: int = CHECKPOINT_EVERY,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.read_raw, self.seals, self.keyring = read_raw, seals, keyring
        self.every, self.clock = checkpoint_every, clock

    def seal(self, batch: int = 1000, progress: Callable[[int], None] | None = None) -> int:
        """Seal everything recorded so far; returns how many events were sealed."""
        position, chain = self.seals.head()
        last_checkpoint = self.seals.last_checkpoint()
        total = 0
        links: dict[str, str] = {}  # each aggregate's last link, as far as this run has seen
        while True:
            rows = self.read_raw(position, batch)
            if not rows:
                break
            links.update(self.seals.last_links({r.originator_id for r in rows
                                                if r.version > 1 and r.originator_id not in links}))
            new = seal_rows(chain, rows, links)
            self.seals.add(new)
            for s in new:
                if s.position - last_checkpoint >= self.every:
                    self.checkpoint(s.position, s.chain)
                    last_checkpoint = s.position
            position, chain = new[-1].position, new[-1].chain
            total += len(new)
            if progress:
                progress(len(new))
        if total and last_checkpoint < position:
            self.checkpoint(position, chain)
        return total

    def checkpoint(self, position: int, chain: str) -> Checkpoint:
        kid = self.keyring.active
        signature = self.keyring.keys[kid].sign(checkpoint_message(position, chain))
        c = Checkpoint(position, chain, kid, _b64(signature), self.clock().isoformat())
        self.seals.add_checkpoint(c)
        return c


def verify(read_raw: Callable[[int, int], list[StoredRow]], seals: AuditSeals, keyring: Keyring,
           progress: Callable[[int], None] | None = None, page: int = 5000) -> Report:
    report = Report()
    head, _ = seals.head()
    report.sealed_head = head

    def rows() -> Iterator[StoredRow]:
        after = 0
        while True:
            chunk = read_raw(after, page)
            if not chunk:
                return
            report.events += len(chunk)
            if progress:
                progress(len(chunk))
            yield from chunk
            after = chunk[-1].position

    report.findings = list(compare(rows(), seals.seals(), head))
    for c in seals.checkpoints():
        report.checkpoints += 1
        key = keyring.keys.get(c.kid)
        if key is None:
            report.unverifiable.append(c.position)
            continue
        try:
            key.public_key().verify(_unb64(c.signature), checkpoint_message(c.position, c.chain))
        except (InvalidSignature, ValueError):
            report.findings.append(Finding(c.position, "checkpoint_invalid", "the signature does not verify"))
            continue
        if seals.chain_at(c.position) != c.chain:
            report.findings.append(Finding(c.position, "checkpoint_mismatch",
                                           "the seals were rewritten after this checkpoint was signed"))
    return report


def verify_aggregate(read_aggregate: Callable[[str], list[StoredRow]], seals: AuditSeals, aggregate: str) -> Report:
    """One aggregate's stored events against its own chain of seals. Proves
    them consistent with what was sealed; that the seals themselves were not
    rewritten since is `verify`'s part (the signed checkpoints)."""
    rows, sealed = read_aggregate(aggregate), seals.seals_of(aggregate)
    report = Report(events=len(rows), sealed=len(sealed), sealed_head=seals.head()[0])
    report.findings = compare_aggregate(rows, sealed)
    return report
