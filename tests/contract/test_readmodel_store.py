"""Contract of the read-model store, against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.readmodels import VERIFY, CopyMoved, PostgresReadModelStore, ReadModelStore, SQLiteReadModelStore, Table

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


# ---------------------------------------------------------------- a rebuild's copy held in memory
def test_a_held_copy_is_written_in_steps_and_read_back_to_resume(store: ReadModelStore) -> None:
    store.start_rebuild("p", [THINGS], fresh=True)
    copy = store.read_copy("p", [THINGS])
    assert copy.position == 0 and copy.rows == {"things": {}}
    copy.upsert("things", {"id": "a", "n": 1, "tags": ["x"], "ok": True})
    copy.upsert("things", {"id": "b", "n": 2})
    copy.patch("things", "a", {"n": 10})
    copy.patch("things", "nobody", {"n": 99})  # a patch of a missing row changes nothing
    copy.set_position(4)
    store.write_copy("p", copy)

    again = store.read_copy("p", [THINGS])  # what an interrupted rebuild resumes from
    assert again.position == 4
    assert again.get("things", "a") == {"id": "a", "n": 10, "tags": ["x"], "ok": True}
    assert again.get("things", "b") == {"id": "b", "n": 2, "tags": None, "ok": None}
    assert again.get("things", "nobody") is None

    # the next write sends only what changed: a change, a removal, a new row
    again.patch("things", "a", {"tags": {"k": [1, 2]}})
    again.delete("things", "b")
    again.upsert("things", {"id": "c", "n": 3, "ok": False})
    again.set_position(9)
    store.write_copy("p", again)
    assert store.start_rebuild("p", [THINGS]) == 9
    assert store.swap("p", [THINGS], lambda tx, frm, to: None) == 9
    assert store.rows("things", order_by="id") == [
        {"id": "a", "n": 10, "tags": {"k": [1, 2]}, "ok": True},
        {"id": "c", "n": 3, "tags": None, "ok": False},
    ]


def test_a_held_copy_is_refused_when_another_rebuild_wrote_the_copy(store: ReadModelStore) -> None:
    store.start_rebuild("p", [THINGS], fresh=True)
    first, second = store.read_copy("p", [THINGS]), store.read_copy("p", [THINGS])
    first.upsert("things", {"id": "a", "n": 1})
    first.set_position(3)
    store.write_copy("p", first)
    second.upsert("things", {"id": "a", "n": 2})
    second.set_position(5)
    with pytest.raises(CopyMoved, match="another rebuild of p"):
        store.write_copy("p", second)
    assert store.read_copy("p", [THINGS]).get("things", "a")["n"] == 1  # nothing of it written


# one change to a row: an upsert (n, tags), a patch (n or tags), a delete, or a read
_keys = st.sampled_from(["a", "b", "c"])
_tags = st.none() | st.lists(st.integers(-3, 3), max_size=2) | st.dictionaries(st.sampled_from("xy"), st.booleans())
_ops = st.lists(st.one_of(
    st.tuples(st.just("upsert"), _keys, st.integers(0, 9), _tags),
    st.tuples(st.just("patch"), _keys, st.just("n"), st.integers(0, 9)),
    st.tuples(st.just("patch"), _keys, st.just("tags"), _tags),
    st.tuples(st.just("patch"), _keys, st.just("ok"), st.booleans()),
    st.tuples(st.just("delete"), _keys),
    st.tuples(st.just("get"), _keys),
), max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_ops, min_size=1, max_size=3))
def test_a_held_copy_means_what_a_transaction_means(store: ReadModelStore, batches: list[list[tuple]]) -> None:
    """The same changes through a held copy (written after each batch) and
    through transactions on the live tables: every read answers the same,
    and the tables end up the same."""
    with store.transaction("p") as tx:  # (the live tables hold what earlier examples left)
        for r in store.rows("things"):
            tx.delete("things", r["id"])
    store.start_rebuild("p", [THINGS], fresh=True)
    copy = store.read_copy("p", [THINGS])
    for batch in batches:
        with store.transaction("p") as tx:
            for op in batch:
                for target in (tx, copy):
                    if op[0] == "upsert":
                        target.upsert("things", {"id": op[1], "n": op[2], "tags": op[3]})
                    elif op[0] == "patch":
                        target.patch("things", op[1], {op[2]: op[3]})
                    elif op[0] == "delete":
                        target.delete("things", op[1])
                assert copy.get("things", op[1]) == tx.get("things", op[1])
        copy.set_position(copy.position + 1)
        store.write_copy("p", copy)
    held = [row for k in "abc" if (row := copy.get("things", k)) is not None]
    assert held == store.rows("things", order_by="id")
    written = store.read_copy("p", [THINGS])  # and what was written of it reads back the same
    assert [written.get("things", k) for k in "abc"] == [copy.get("things", k) for k in "abc"]


def test_live_tables_made_before_text_compared_as_bytes_still_verify(pg_url: str) -> None:
    """PostgreSQL text columns are COLLATE "C" now; a live table made before
    has the database's collation. Comparing it with a fresh copy must work
    (the columns of the two tables differ in collation)."""
    store = PostgresReadModelStore(pg_url)
    try:
        with store._tx() as cur:  # the live table as an older version made it
            cur.execute("DROP TABLE IF EXISTS rm_things")
            cur.execute("CREATE TABLE rm_things (id text PRIMARY KEY, n bigint, tags jsonb, ok boolean)")
        store.install([THINGS])
        with store.transaction("p") as tx:
            tx.upsert("things", {"id": "a", "n": 1})
            tx.upsert("things", {"id": "b", "n": 2})
            tx.set_position(2)
        store.start_rebuild("p", [THINGS], fresh=True, scratch=VERIFY)
        with store.transaction("p", scratch=VERIFY) as tx:
            tx.upsert("things", {"id": "a", "n": 1})
            tx.upsert("things", {"id": "b", "n": 3})
            tx.set_position(2)
        at, differences = store.compare("p", [THINGS], lambda tx, frm, to: None, scratch=VERIFY)
        assert at == 2 and [(d.key, d.kind, d.columns) for d in differences] == [("b", "differs", ("n",))]
    finally:
        store.drop_scratch("p", [THINGS], scratch=VERIFY)
        store.close()


def test_a_bulk_load_into_an_empty_copy_keeps_its_key(store: ReadModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many new rows into an empty copy may go in before its key is built
    (PostgreSQL); the key must be there after: the next write upserts on it,
    and the swapped-in table takes the live projector's upserts."""
    monkeypatch.setattr(type(store), "BULK_KEY_AFTER", 5, raising=False)
    store.start_rebuild("p", [THINGS], fresh=True)
    copy = store.read_copy("p", [THINGS])
    for i in range(12):
        copy.upsert("things", {"id": f"k{i:02}", "n": i})
    copy.set_position(1)
    store.write_copy("p", copy)
    copy.patch("things", "k03", {"n": 30})  # an upsert of a row the copy holds: ON CONFLICT needs the key
    copy.upsert("things", {"id": "k12", "n": 12})
    copy.set_position(2)
    store.write_copy("p", copy)
    store.swap("p", [THINGS], lambda tx, frm, to: None)
    with store.transaction("p") as tx:
        tx.upsert("things", {"id": "k04", "n": 40})
    rows = store.rows("things", order_by="id")
    assert len(rows) == 13 and [r["n"] for r in rows if r["id"] in ("k03", "k04")] == [30, 40]
