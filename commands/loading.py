"""Loading aggregates in handlers: a missing one is the domain's `NotFound`."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from domain.errors import NotFound


class Loader:
    repository: Any

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
