"""Contract of the read-model store, against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.readmodels import PostgresReadModelStore, ReadModelStore, SQLiteReadModelStore, Table

THINGS = Table("things", columns=(("id", "text"), ("n", "int"), ("tags", "json"), ("ok", "bool")), indexes=("n",))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModelStore]:
    s: ReadModelStore = (PostgresReadModelStore(request.getfixturevalue("pg_url")) if request.param == "postgres"
                         else SQLiteReadModelStore(tmp_path / "rm.sqlite3"))
    s.install([THINGS])
    yield s
    s.close()


def test_writes_and_position_commit_together(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        assert tx.position == 0
        tx.upsert("things", {"id": "a", "n": 1, "tags": ["x"], "ok": True})
        tx.upsert("things", {"id": "b", "n": 2, "tags": {"k": 1}, "ok": False})
        tx.patch("things", "a", {"n": 10})
        tx.set_position(7)
    assert store.position("p") == 7
    assert store.get("things", "a") == {"id": "a", "n": 10, "tags": ["x"], "ok": True}
    assert [r["id"] for r in store.rows("things", order_by="n DESC")] == ["a", "b"]
    assert store.rows("things", where={"n": 2})[0]["tags"] == {"k": 1}


def test_a_failure_rolls_back_rows_and_position(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        tx.upsert("things", {"id": "a", "n": 1})
        tx.set_position(1)
    with pytest.raises(RuntimeError):
        with store.transaction("p") as tx:
            tx.upsert("things", {"id": "b", "n": 2})
            tx.delete("things", "a")
            tx.set_position(2)
            assert tx.get("things", "b") is not None  # visible inside the transaction
            raise RuntimeError("crash mid-batch")
    assert store.position("p") == 1
    assert [r["id"] for r in store.rows("things")] == ["a"]


def test_upsert_replaces_the_row(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        tx.upsert("things", {"id": "a", "n": 1})
        tx.upsert("things", {"id": "a", "n": 2})
    assert store.rows("things") == [{"id": "a", "n": 2, "tags": None, "ok": None}]


def test_rebuild_writes_scratch_then_swaps_with_catch_up(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        tx.upsert("things", {"id": "old", "n": 0})
        tx.set_position(5)
    assert store.start_rebuild("p", [THINGS], fresh=True) == 0
    with store.transaction("p", scratch=True) as tx:
        tx.upsert("things", {"id": "new", "n": 1})
        tx.set_position(3)
    # readers still see the live tables during the rebuild
    assert [r["id"] for r in store.rows("things")] == ["old"]
    # an interrupted rebuild resumes where it stopped
    assert store.start_rebuild("p", [THINGS]) == 3

    calls = []

    def catch_up(tx, frm: int, to: int) -> None:
        calls.append((frm, to))
        tx.upsert("things", {"id": "caught-up", "n": 2})
        tx.set_position(to)

    assert store.swap("p", [THINGS], catch_up) == 5
    assert calls == [(3, 5)]
    assert sorted(r["id"] for r in store.rows("things")) == ["caught-up", "new"]
    assert store.position("p") == 5
    with store.transaction("p") as tx:  # the live projector carries on from there
        assert tx.position == 5
        tx.upsert("things", {"id": "later", "n": 3})
    assert store.rows("things", where={"n": 3})[0]["id"] == "later"


def test_install_is_idempotent(store: ReadModelStore) -> None:
    store.install([THINGS])
    store.install([THINGS])
    store.ping()


def test_conditions_select_ranges_for_keyset_pages(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        for i in range(10):
            tx.upsert("things", {"id": f"k{i}", "n": i, "ok": i % 2 == 0})
    assert [r["n"] for r in store.rows("things", conditions=[("n", ">=", 3), ("n", "<", 6)], order_by="n")] == [3, 4, 5]
    page1 = store.rows("things", where={"ok": True}, order_by="id", limit=2)
    page2 = store.rows("things", where={"ok": True}, order_by="id", limit=2, conditions=[("id", ">", page1[-1]["id"])])
    assert [r["id"] for r in page1 + page2] == ["k0", "k2", "k4", "k6"]


def test_in_selects_a_batch_in_one_query(store: ReadModelStore) -> None:
    with store.transaction("p") as tx:
        for i in range(5):
            tx.upsert("things", {"id": f"b{i}", "n": i})
    before = store.queries  # type: ignore[attr-defined]
    rows = store.rows("things", conditions=[("id", "in", ["b1", "b3", "nope"])], order_by="id")
    assert [r["id"] for r in rows] == ["b1", "b3"] and store.queries == before + 1  # type: ignore[attr-defined]
    assert store.rows("things", conditions=[("id", "in", [])]) == []
