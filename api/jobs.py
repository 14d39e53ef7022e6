"""Scheduled jobs (the scheduler's work, not domain events)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import structlog

from api.bootstrap import Container
from commands.messages import CommandContext
from domain.errors import ConcurrencyConflict

log = structlog.get_logger("jobs")


def extend_horizons(c: Container, now: dt.datetime | None = None) -> int:
    """Generate open-ended series' sessions up to the rolling horizon. Safe to
    run anywhere, any number of times, concurrently: session ids are derived,
    a series' horizon only grows, and a concurrent run loses with a conflict."""
    now = now or c.clock()
    added = 0
    for row in c.readmodels.rows("series", where={"open_ended": True}):
        if row["continued_by"]:
            continue
        try:
            added += c.app.extend_horizon(uuid.UUID(row["id"]), CommandContext.system("scheduler"), now)
        except ConcurrencyConflict:
            log.info("horizon_extended_elsewhere", series_id=row["id"])
    log.info("horizons_extended", sessions_added=added)
    return added


def fail_overdue_checkins(c: Container, now: dt.datetime | None = None) -> int:
    """Fail check-ins whose face verification never answered within the
    deadline (`VERIFICATION_TIMEOUT`): pending is never forever, and never an
    accept. Safe to run anywhere, concurrently (a verdict is recorded once)."""
    now = now or c.clock()
    rows = c.readmodels.rows("checkins", where={"outcome": "pending"}, limit=5000)
    failed = c.app.fail_overdue([(uuid.UUID(r["id"]), dt.datetime.fromisoformat(r["received_at"])) for r in rows], now)
    if failed:
        log.info("overdue_checkins_failed", failed=failed)
    return failed


async def seal_every(c: Container, stop: "asyncio.Event", every: float = 5.0) -> None:
    """Seal the log every few seconds (tamper evidence: `attendwise audit`).
    Safe anywhere, concurrently: seals are deterministic and idempotent."""
    from api.bootstrap import sealer

    while not stop.is_set():
        try:
            sealed = await asyncio.to_thread(sealer(c).seal)
            if sealed:
                log.info("log_sealed", events=sealed)
        except Exception:  # noqa: BLE001 - logged; the next round catches up
            log.exception("sealing_failed")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass
