"""Loading aggregates in handlers (a missing one is the domain's `NotFound`),
and saving again after losing a race."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from domain.errors import ConcurrencyConflict, NotFound


class Loader:
    repository: Any
    save_stamped: Any

    def _find(self, aggregate_id: uuid.UUID, kind: type) -> Any:
        """The aggregate, or None if there is none of this kind with this id."""
        try:
            agg = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, kind) else None

    def _get(self, aggregate_id: uuid.UUID, kind: type, name: str) -> Any:
        agg = self._find(aggregate_id, kind)
        if agg is None:
            raise NotFound(f"no {name} {aggregate_id}")
        return agg

    def _save_retrying(self, ctx: Any, work: Callable[[], tuple[Any, list[Any]]], attempts: int = 5) -> Any:
        """Run `work()` (it loads, decides and returns (result, changed
        aggregates)) and save what changed; when a concurrent command changed
        the same aggregates first, run it again on what that command left."""
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
        raise AssertionError("unreachable")
