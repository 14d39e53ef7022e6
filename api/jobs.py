"""Scheduled jobs (the scheduler's work, not domain events)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import structlog

from api.bootstrap import Container
from commands.messages import CommandContext
from domain.errors import ConcurrencyConflict

log = structlog.get_logger("jobs")
SEAL_EVERY = 5.0  # seconds between seals of the log


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


def seal_log(c: Container) -> int:
    """Seal what is new in the log (tamper evidence: `attendwise audit`).
    Safe anywhere, concurrently: seals are deterministic and idempotent."""
    from api.bootstrap import sealer

    sealed = sealer(c).seal()
    if sealed:
        log.info("log_sealed", events=sealed)
    return sealed


async def repeat(name: str, stop: asyncio.Event, run: Callable[[], Awaitable[object]], every: float | None = None,
                 wait_first: bool = False) -> None:
    """Run `run` until stop: once (`every` None: again only after an error),
    or every `every` seconds, first after one interval when `wait_first`.
    An error is logged and the loop goes on, so one bad moment ends nothing."""
    if wait_first and every is not None and await _stopped(stop, every):
        return
    while not stop.is_set():
        try:
            await run()
        except Exception:  # noqa: BLE001 - logged and retried
            log.exception("job_failed", job=name)
        else:
            if every is None:
                return
        if await _stopped(stop, every or 1.0):
            return


def in_thread(job: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """A blocking job as something `repeat` can await."""
    return lambda: asyncio.to_thread(job)


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
