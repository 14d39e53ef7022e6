"""Tamper evidence for the event log: pure rules.

Each stored event gets a content digest over what is stored (aggregate id,
version, topic and the stored bytes, encrypted personal data included, so
crypto-shredding never breaks the chain), a chain hash covering the
previous chain hash, its position and its content (the global chain, in log
order), and a link covering its aggregate's previous link, its version and
its content (the aggregate's own chain: one check-in's, one ticket's history
can be checked alone, `compare_aggregate`). Sealing records all three per
position; a signed checkpoint (position, chain hash) now and then lets anyone
holding the platform's public key prove the log up to there was not rewritten
later, even by someone who could also rewrite the seals.

`compare` walks the live log and the seals together, in position order, and
says what changed where: altered (content differs), removed (a sealed
position is gone), inserted (an unsealed position below the sealed head),
reordered (a position holds content sealed at another one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

GENESIS = "0" * 64


@dataclass(frozen=True)
class StoredRow:
    """One event as the database holds it."""

    position: int
    originator_id: str
    version: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class Seal:
    position: int
    content: str  # hex sha256 of the stored event
    chain: str  # hex sha256 over the previous chain, the position and the content
    aggregate: str | None = None  # the event's aggregate (None: sealed before aggregates had chains)
    version: int | None = None
    link: str | None = None  # hex sha256 over the aggregate's previous link, the version and the content


@dataclass(frozen=True)
class Finding:
    position: int
    kind: str  # altered, removed, inserted, reordered, seal_broken, link_broken, checkpoint_invalid,
    #            checkpoint_mismatch, version_gap
    detail: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.kind} ({self.detail})"


def content_digest(row: StoredRow) -> str:
    h = hashlib.sha256()
    for part in (str(row.originator_id), str(row.version), row.topic):
        h.update(part.encode())
        h.update(b"\x1f")
    h.update(row.state)
    return h.hexdigest()


def chain_hash(previous: str, position: int, content: str) -> str:
    return hashlib.sha256(f"{previous}:{position}:{content}".encode()).hexdigest()


def aggregate_link(previous: str, version: int, content: str) -> str:
    return hashlib.sha256(f"{previous}:v{version}:{content}".encode()).hexdigest()


def seal_rows(previous: str, rows: Iterable[StoredRow], links: dict[str, str] | None = None) -> list[Seal]:
    """Seals for `rows` (in log order) after the chain hash `previous`.
    `links`: each aggregate's last link so far (GENESIS when absent), kept
    up to date as rows are sealed."""
    links = {} if links is None else links
    out = []
    for row in rows:
        content = content_digest(row)
        previous = chain_hash(previous, row.position, content)
        link = links[row.originator_id] = aggregate_link(links.get(row.originator_id, GENESIS), row.version, content)
        out.append(Seal(row.position, content, previous, row.originator_id, row.version, link))
    return out


def checkpoint_message(position: int, chain: str) -> bytes:
    """What a checkpoint signature covers."""
    return f"attendwise-log-checkpoint:v1:{position}:{chain}".encode()


def compare(rows: Iterator[StoredRow], seals: Iterator[Seal], sealed_head: int) -> Iterator[Finding]:
    """Merge the live log and the seals by position (both ascending). Also
    re-derives each seal's chain from the one before, so rewritten seals show
    as `seal_broken` unless the rewriter recomputed the whole chain (the signed
    checkpoints catch that: `check_checkpoints`)."""
    mismatched: dict[int, tuple[str, str]] = {}  # position -> (live content, sealed content)
    previous = GENESIS
    links: dict[str, str] = {}
    row, seal = next(rows, None), next(seals, None)
    versions: dict[str, int] = {}
    while row is not None or seal is not None:
        if row is not None:
            last = versions.get(row.originator_id, 0)
            if row.version != last + 1 and row.position <= sealed_head:
                yield Finding(row.position, "version_gap",
                              f"aggregate {row.originator_id} goes from version {last} to {row.version}")
            versions[row.originator_id] = max(last, row.version)
        if seal is not None and (row is None or seal.position < row.position):
            yield Finding(seal.position, "removed", "a sealed event is no longer in the log")
            yield from _follow(links, seal)
            previous = _check_link(previous, seal)
            seal = next(seals, None)
            continue
        if seal is None or row.position < seal.position:  # type: ignore[union-attr]
            if row.position <= sealed_head:  # type: ignore[union-attr]
                yield Finding(row.position, "inserted", "an event below the sealed head was never sealed")  # type: ignore[union-attr]
            row = next(rows, None)
            continue
        live = content_digest(row)  # type: ignore[arg-type]
        if live != seal.content:
            mismatched[seal.position] = (live, seal.content)
        broken = _check_link(previous, seal)
        if broken != seal.chain:
            yield Finding(seal.position, "seal_broken", "the seal does not follow from the one before")
        yield from _follow(links, seal)
        previous = seal.chain
        row, seal = next(rows, None), next(seals, None)
    sealed_at = {sealed: pos for pos, (_, sealed) in mismatched.items()}
    for pos, (live, _) in sorted(mismatched.items()):
        if live in sealed_at and sealed_at[live] != pos:
            yield Finding(pos, "reordered", f"holds the event sealed at position {sealed_at[live]}")
        else:
            yield Finding(pos, "altered", "its stored content differs from what was sealed")


def _check_link(previous: str, seal: Seal) -> str:
    return chain_hash(previous, seal.position, seal.content)


def _follow(links: dict[str, str], seal: Seal) -> Iterator[Finding]:
    """Moves `seal`'s aggregate chain on; a finding when its link does not
    follow from the aggregate's previous one (seals rewritten, or an
    aggregate's sealed event taken out together with its seal)."""
    if seal.aggregate is None or seal.link is None or seal.version is None:
        return
    expected = aggregate_link(links.get(seal.aggregate, GENESIS), seal.version, seal.content)
    links[seal.aggregate] = seal.link
    if expected != seal.link:
        yield Finding(seal.position, "link_broken",
                      f"aggregate {seal.aggregate} v{seal.version}: the seal does not follow from its last one")


def compare_aggregate(rows: list[StoredRow], seals: list[Seal]) -> list[Finding]:
    """One aggregate's stored events (by version) against its seals (by
    version): what `compare` says about them, without walking the log."""
    findings: list[Finding] = []
    live = {r.version: r for r in rows}
    sealed = {s.version: s for s in seals if s.version is not None}
    links: dict[str, str] = {}
    top = max(sealed, default=0)
    for version in sorted(set(live) | set(sealed)):
        row, seal = live.get(version), sealed.get(version)
        if seal is None:
            if version <= top:
                findings.append(Finding(row.position, "inserted", f"version {version} was never sealed"))  # type: ignore[union-attr]
            continue
        findings += _follow(links, seal)
        if row is None:
            findings.append(Finding(seal.position, "removed", f"sealed version {version} is no longer in the log"))
        elif content_digest(row) != seal.content:
            findings.append(Finding(row.position, "altered", f"version {version} differs from what was sealed"))
        elif row.position != seal.position:
            findings.append(Finding(row.position, "reordered", f"version {version} was sealed at position {seal.position}"))
    return sorted(findings, key=lambda f: f.position)


def first(findings: Iterable[Finding]) -> Finding | None:
    found = sorted(findings, key=lambda f: f.position)
    return found[0] if found else None
