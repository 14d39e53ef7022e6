"""Loading aggregates in handlers (a missing one is the domain's `NotFound`),
and saving again after losing a race."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from domain.errors import ConcurrencyConflict, NotFound


class Loader:
    repository: Any
    recorder: Any
    mapper: Any
    save_stamped: Any

    def _find(self, aggregate_id: uuid.UUID, kind: type) -> Any:
        """The aggregate, or None if there is none of this kind with this id."""
        try:
            agg = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, kind) else None

    def _find_all(self, *wanted: tuple[uuid.UUID, type]) -> list[Any]:
        """`_find` of each (id, kind), read from the event store in one query
        where the recorder can (PostgreSQL), else one by one."""
        many = getattr(self.recorder, "select_events_of_many", None)
        if many is None:
            return [self._find(aggregate_id, kind) for aggregate_id, kind in wanted]
        events: dict[uuid.UUID, list[Any]] = {}
        for stored in many([aggregate_id for aggregate_id, _ in wanted]):
            events.setdefault(stored.originator_id, []).append(self.mapper.to_domain_event(stored))
        found = [_fold(events.get(aggregate_id, [])) for aggregate_id, _ in wanted]
        return [agg if isinstance(agg, kind) else None for agg, (_, kind) in zip(found, wanted)]

    def _get(self, aggregate_id: uuid.UUID, kind: type, name: str) -> Any:
        agg = self._find(aggregate_id, kind)
        if agg is None:
            raise NotFound(f"no {name} {aggregate_id}")
        return agg

    def _save_retrying(self, ctx: Any, work: Callable[[], tuple[Any, list[Any]]], attempts: int = 12) -> Any:
        """Run `work()` (it loads, decides and returns (result, changed
        aggregates)) and save what changed; when a concurrent command changed
        the same aggregates first, run it again on what that command left.

        Losers wait a random, growing pause before they reload (up to 50 ms):
        when many members take the last places of one session at once, each
        round has one winner, and without the pause the same losers meet again
        at once and run out of attempts."""
        for attempt in range(1, attempts + 1):
            result, changed = work()
            if not changed:
                return result
            try:
                self.save_stamped(ctx, *changed)
                return result
            except ConcurrencyConflict:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2 ** attempt)))
        raise AssertionError("unreachable")


def _fold(events: list[Any]) -> Any:
    """The aggregate its events make (None for none): the library's
    `project_aggregate` without its per-event runtime Protocol check, which
    cost more than the mutation itself; our events all have `mutate`."""
    aggregate = None
    for ev in events:
        aggregate = ev.mutate(aggregate)
    return aggregate
