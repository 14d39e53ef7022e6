"""The attendance projection caches rows per transaction, and nothing after it:
bench/load.py saw the projector grow by a third in five minutes when each
transaction's cache held its transaction (the key of the WeakKeyDictionary
it lives in) and so was never let go."""

from __future__ import annotations

import gc
from typing import Any

from domain.envelope import EventEnvelope
from projections.attendance import AttendanceProjection


class FakeTx:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        return self.rows.get((table, key))

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        self.rows[(table, row["id"])] = row

    def patch(self, table: str, key: str, changes: dict[str, Any]) -> None:
        self.rows[(table, key)].update(changes)

    def delete(self, table: str, key: str) -> None:
        self.rows.pop((table, key), None)


def opened(position: int) -> EventEnvelope:
    return EventEnvelope(position, f"e{position}", "RosterOpened", "attendance", f"r{position}", 1,
                         "2030-01-01T00:00:00+00:00", 1, "test", "c", {"session_id": f"s{position}"})


def test_no_transaction_cache_outlives_its_transaction() -> None:
    projection = AttendanceProjection()
    for position in range(1, 51):
        tx = FakeTx()
        projection.apply(opened(position), tx)
        assert tx.rows  # the cache wrote through to the transaction
    del tx
    gc.collect()
    assert len(projection._caches) == 0
