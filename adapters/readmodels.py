"""Read-model stores: the tables projections write and GraphQL reads.

Port `ReadModelStore` (contract below), adapters for SQLite (embedded) and
PostgreSQL (full mode), both tested by tests/contract/test_readmodel_store.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from adapters.errors import ServiceUnavailable
from adapters.sql import POOL_WAIT, sqlite_transaction

POSITIONS = "projection_positions"
ERRORS = "projection_errors"  # the last failure of each projection, until it moves past it
OPERATORS = ("=", "<", "<=", ">", ">=", "in")
Condition = tuple[str, str, Any]
SCRATCH = "__next"  # a rebuild's copy of the tables
VERIFY = "__verify"  # `projections verify`'s copy: never the rebuild's, so both can run
Scratch = bool | str  # False: the live tables; True: the rebuild's copy (SCRATCH); a suffix: another copy
TYPES = {"text", "int", "float", "bool", "json"}


def suffix(scratch: Scratch) -> str:
    """The table-name and position-name suffix of a copy of the tables."""
    return SCRATCH if scratch is True else (scratch or "")


@dataclass(frozen=True)
class ProjectionError:
    """A projection's last failure: it stopped after `position` (its
    position then), and is retried until it gets past it."""

    name: str
    position: int
    error: str
    first_at: str  # ISO 8601, UTC: the first failure at this position
    last_at: str  # the latest
    attempts: int


@dataclass(frozen=True)
class Difference:
    """One row where a projection's live table and a fresh replay disagree.
    `missing`: the replay has a row the live table lacks; `extra`: the live
    table has a row the replay does not; `differs`: both have the key, some
    columns differ (`columns`)."""

    table: str
    key: Any
    kind: str  # missing, extra, differs
    live: dict[str, Any] | None = None
    rebuilt: dict[str, Any] | None = None
    columns: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        if self.kind != "differs":
            return f"{self.table} {self.key}: {self.kind}"
        assert self.live is not None and self.rebuilt is not None
        cols = "; ".join(f"{c}: live {self.live.get(c)!r}, rebuilt {self.rebuilt.get(c)!r}" for c in self.columns)
        return f"{self.table} {self.key}: differs ({cols})"


@dataclass(frozen=True)
class Snapshot:
    """All of one projection's live tables as of one position: `rows(table)`
    iterates a table's rows in key order, all from one consistent view."""

    position: int
    rows: Callable[[str], Iterator[dict[str, Any]]]


@runtime_checkable
class ErrorLog(Protocol):
    """Where projectors record failures for `attendwise projections status`
    (another process) to show. Contract: `record_error(name, position, error)`
    keeps the last error of `name` (counting attempts at one position), unless
    the projection has already moved past `position`; any commit that moves
    the projection's position clears it; `errors()` returns what is left."""

    def record_error(self, name: str, position: int, error: str) -> None: ...

    def errors(self) -> dict[str, ProjectionError]: ...


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Table:
    """A read-model table: logical name, typed columns, one key column."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: str = "id"
    indexes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [c for c, _ in self.columns]
        assert self.key in names, f"{self.name}: key {self.key} is not a column"
        assert all(t in TYPES for _, t in self.columns), f"{self.name}: unknown column type"

    @functools.cached_property  # (read for every row written: made once)
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        return dict(self.columns)

    def held_key(self, key: Any) -> Any:
        """A key as rows held in memory are filed under: text keys as text (a
        UUID and its text name one row, as they do in the database)."""
        return str(key) if self.kinds[self.key] == "text" else key

    @functools.cached_property
    def converted(self) -> tuple[tuple[str, str], ...]:
        """The columns whose values a trip through the database changes."""
        return tuple((c, k) for c, k in self.columns if k in ("json", "bool"))

    def physical(self, scratch: Scratch = False) -> str:
        return f"rm_{self.name}{suffix(scratch)}"


def as_read(t: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row held in memory as the database would give it back: a copy, JSON
    through a round trip, bools as bools."""
    out = dict(row)
    for c, kind in t.converted:
        v = out.get(c)
        if v is not None:
            out[c] = _json_round_trip(v) if kind == "json" else bool(v)
    return out


_AS_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS  # what `json.dumps(v, sort_keys=True)` takes and gives


def _json_text(v: Any) -> str:
    """JSON for a jsonb column (which keeps no formatting), by orjson."""
    try:
        return orjson.dumps(v, option=_AS_JSON).decode()
    except TypeError:
        return json.dumps(v, sort_keys=True)


def _json_round_trip(v: Any) -> Any:
    """`json.loads(json.dumps(v))` (tuples become lists, keys text), by orjson:
    a rebuild reads rows back hundreds of thousands of times."""
    if v.__class__ in (str, int, float, bool):
        return v
    try:
        return orjson.loads(orjson.dumps(v, option=_AS_JSON))
    except TypeError:  # what orjson will not take (an int beyond 64 bits, NaN keys...): the slow way
        return json.loads(json.dumps(v, sort_keys=True))


class ReadModelTx(Protocol):
    """One atomic unit of projection work. Writes and the new position commit
    together or not at all (exactly-once effect of each event)."""

    position: int  # the projection's position when the transaction began

    def upsert(self, table: str, row: dict[str, Any]) -> None: ...

    def patch(self, table: str, key: Any, changes: dict[str, Any]) -> None: ...

    def delete(self, table: str, key: Any) -> None: ...

    def get(self, table: str, key: Any) -> dict[str, Any] | None: ...

    def set_position(self, position: int) -> None: ...


class PrefetchingTx(ReadModelTx, Protocol):
    """A transaction that can read many rows in one round trip (`_SqlTx`)."""

    def prefetch(self, table: str, keys: Collection[Any]) -> None: ...


class ReadModelStore(Protocol):
    """Port. Contract:
    - `install(tables)` creates missing live tables; idempotent.
    - `transaction(name)` yields a `ReadModelTx` holding the projection's
      row lock: two transactions of one projection never interleave. Leaving
      the block commits; an exception rolls everything back, position included.
    - `position(name)` is the position last committed (0 if none).
    - `get`/`rows` read the live tables (never the scratch ones).
    - `start_rebuild(name, tables, fresh)` creates scratch tables (kept and
      resumed unless `fresh`) and returns the scratch position;
      `transaction(name, scratch=True)` writes to them.
    - `swap(name, tables, catch_up)` in one transaction, holding the live
      projection's lock: calls `catch_up(tx, from_pos, to_pos)` to bring the
      scratch tables from their position to the live one, then replaces the
      live tables with them. Readers see the old tables or the new, never a
      mix or nothing. Returns the live position.
    - `scratch` may also be a suffix (`VERIFY`): another copy of the tables,
      with its own position, independent of a rebuild's.
    - `compare(name, tables, catch_up, scratch)`, in one transaction holding
      the live projection's lock: brings the copy to the live position like
      `swap`, then compares it with the live tables row by row; returns the
      live position and the differences (at most `limit` per table). Changes
      nothing live. `drop_scratch(name, tables, scratch)` removes a copy.
    - `read_copy(name, tables, scratch)` returns a copy's rows and position
      as a `HeldCopy`; `write_copy(name, copy, scratch)` writes what changed
      in it since, with its position, in one transaction (a rebuild holds
      its copy in memory between the two).
    - `snapshot(name)` yields a `Snapshot`: the projection's position and its
      live rows, all as of one moment (a read transaction), without blocking
      its projector.
    - It is also an `ErrorLog`: the projection's position moving clears its
      recorded error, in the same transaction.
    """

    def install(self, tables: Sequence[Table]) -> None: ...

    @contextmanager
    def transaction(self, name: str, scratch: Scratch = False) -> Iterator[ReadModelTx]: ...

    def position(self, name: str) -> int: ...

    def get(self, table: str, key: Any) -> dict[str, Any] | None: ...

    def rows(self, table: str, where: dict[str, Any] | None = None, order_by: str | None = None,
             limit: int | None = None, conditions: Sequence[Condition] = ()) -> list[dict[str, Any]]:
        """Live rows matching `where` (equality) and `conditions` ((column,
        op, value) with op one of = < <= > >=), ordered, at most `limit`."""
        ...

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False, scratch: Scratch = True) -> int: ...

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int: ...

    def compare(self, name: str, tables: Sequence[Table], catch_up: Callable[[ReadModelTx, int, int], None],
                scratch: Scratch = VERIFY, limit: int = 1000) -> tuple[int, list[Difference]]: ...

    def drop_scratch(self, name: str, tables: Sequence[Table], scratch: Scratch = VERIFY) -> None: ...

    def read_copy(self, name: str, tables: Sequence[Table], scratch: Scratch = True) -> HeldCopy: ...

    def write_copy(self, name: str, copy: HeldCopy, scratch: Scratch = True) -> None: ...

    @contextmanager
    def snapshot(self, name: str) -> Iterator[Snapshot]: ...

    def record_error(self, name: str, position: int, error: str) -> None: ...

    def errors(self) -> dict[str, ProjectionError]: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- shared SQL
class HeldCopy:
    """A projection's copy held in memory through a rebuild: the
    `ReadModelTx` that `replay` applies the log to, written to the copy's
    tables (`write_copy`) now and then and at the end, and read back from
    them (`read_copy`) to resume.

    Row by row through the database, a rebuild spent more of the machine
    on the writes and the read-backs of counters than on the projection
    itself. In memory each `get` is a dictionary look-up, and a row is
    written once (new rows in one bulk load) however often it changed. The
    price is memory: the projection's rows are all held (the rebuild
    benchmark prints how much). Same meaning as a transaction's writes: an
    upsert replaces the whole row, a patch of a missing row changes
    nothing, `get` returns the row as the database would give it back."""

    rows_in_memory = True  # (a projection needs no cache of its own in front of it)

    def __init__(self, tables: Sequence[Table], position: int,
                 rows: dict[str, dict[Any, dict[str, Any]]] | None = None) -> None:
        self.tables = {t.name: t for t in tables}
        self.position = position
        self.written_position = position  # the copy's position in the database
        self.rows = {t.name: dict((rows or {}).get(t.name, {})) for t in tables}
        self.stored = {name: set(held) for name, held in self.rows.items()}  # keys the database copy holds
        self.changed: dict[str, set[Any]] = {name: set() for name in self.rows}  # since the last write

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        t = self.tables[table]
        key = t.held_key(row.get(t.key))
        held = dict.fromkeys(t.column_names)  # every column: an upsert replaces the whole row
        held.update(row)
        if len(held) != len(t.column_names):  # (keys that are no column are not kept)
            held = {c: row.get(c) for c in t.column_names}
        self.rows[table][key] = held
        self.changed[table].add(key)

    def patch(self, table: str, key: Any, changes: dict[str, Any]) -> None:
        t = self.tables[table]
        key = t.held_key(key)
        held = self.rows[table].get(key)
        if held is not None:
            held.update(changes)
            self.changed[table].add(key)

    def delete(self, table: str, key: Any) -> None:
        key = self.tables[table].held_key(key)
        if self.rows[table].pop(key, None) is not None:
            self.changed[table].add(key)

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        t = self.tables[table]
        held = self.rows[table].get(t.held_key(key))
        return None if held is None else as_read(t, held)

    def set_position(self, position: int) -> None:
        self.position = position

    def flush(self) -> None:
        """(Nothing to send: the rows go to the database in `write_copy`.)"""

    def pending(self, table: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
        """Since the last write: (new rows, changed rows the copy holds,
        keys of rows it holds that are gone)."""
        held, stored = self.rows[table], self.stored[table]
        new, changed, gone = [], [], []
        for key in self.changed[table]:
            row = held.get(key)
            if row is None:
                if key in stored:
                    gone.append(key)
            else:
                (changed if key in stored else new).append(row)
        return new, changed, gone

    def written(self) -> None:
        """The pending changes and the position are in the database now."""
        for table, keys in self.changed.items():
            held, stored = self.rows[table], self.stored[table]
            for key in keys:
                if key in held:
                    stored.add(key)
                else:
                    stored.discard(key)
            keys.clear()
        self.written_position = self.position


class CopyMoved(RuntimeError):
    """Something else wrote a held copy's tables since it was read."""


class _SqlTx:
    """Buffers writes and flushes them with executemany (one round trip per run
    of like statements): the rebuild path writes hundreds of thousands of rows.

    It also remembers each row it wrote or read, so `get` of a known row
    needs no flush and no round trip, and `get` of another row needs no
    flush unless a pending `patch` touches it. Exact, because the
    transaction holds the projection's lock: no one else writes these tables
    meanwhile. `get` hands out the row as the database would give it back
    (JSON through a round trip, bools as bools): a copy, made only when
    asked for, since most rows written are never read back."""

    def __init__(self, store: "_SqlStore", cur: Any, name: str, scratch: Scratch, position: int) -> None:
        self.store, self.cur, self.name, self.scratch = store, cur, name, scratch
        self.position = position
        self._new_position: int | None = None
        self._ops: list[tuple[str, tuple[Any, ...]]] = []
        self._known: dict[tuple[str, Any], dict[str, Any] | None] = {}  # (table, key) -> row, None: no row
        self._dirty: set[tuple[str, Any]] = set()  # patched, not known: read only after a flush

    def _t(self, table: str) -> Table:
        return self.store.tables[table]

    @staticmethod
    def _ck(t: Table, key: Any) -> tuple[str, Any]:
        return t.name, t.held_key(key)

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        t = self._t(table)
        values = tuple(row.get(c) for c in t.column_names)
        self._ops.append((("upsert", t.name), values))
        ck = self._ck(t, row.get(t.key))
        self._known[ck] = dict(zip(t.column_names, values))
        self._dirty.discard(ck)

    def patch(self, table: str, key: Any, changes: dict[str, Any]) -> None:
        t = self._t(table)
        cols = tuple(sorted(changes))
        self._ops.append((("patch", t.name, cols), (*(changes[c] for c in cols), key)))
        ck = self._ck(t, key)
        if ck not in self._known:
            self._dirty.add(ck)
        elif (known := self._known[ck]) is not None:  # (no row: the UPDATE changes nothing)
            known.update({c: changes[c] for c in cols})

    def delete(self, table: str, key: Any) -> None:
        t = self._t(table)
        self._ops.append((("delete", t.name), (key,)))
        ck = self._ck(t, key)
        self._known[ck] = None
        self._dirty.discard(ck)

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        t = self._t(table)
        ck = self._ck(t, key)
        if ck not in self._known:
            if ck in self._dirty:
                self.flush()
            self.cur.execute(f"SELECT * FROM {t.physical(self.scratch)} WHERE {t.key} = {self.store.param}", (key,))
            r = self.cur.fetchone()
            self._known[ck] = None if r is None else self.store.decode_row(t, r)
        known = self._known[ck]
        return None if known is None else as_read(t, known)

    def prefetch(self, table: str, keys: Collection[Any]) -> None:
        """Reads the rows of `keys` not known yet in one query per thousand,
        so their `get`s need no round trip (absent ones are known absent)."""
        t = self._t(table)
        todo = [k for k in keys if self._ck(t, k) not in self._known]
        if any(self._ck(t, k) in self._dirty for k in todo):
            self.flush()
        for i in range(0, len(todo), 1000):
            chunk = todo[i:i + 1000]
            for r in self.store.select_many(self.cur, t, self.scratch, chunk):
                row = self.store.decode_row(t, r)
                self._known[self._ck(t, row[t.key])] = row
            for k in chunk:
                self._known.setdefault(self._ck(t, k), None)

    def set_position(self, position: int) -> None:
        self._new_position = position

    def flush(self) -> None:
        """Sends the buffered changes as few statements as order allows. Each
        row's changes must stay in order; rows are independent of each other
        (no triggers, no foreign keys). So each change goes to the earliest
        stage after its row's previous change (the same stage when that was
        a change of the same kind: then the later one wins, as it would row
        by row), and each stage sends one statement per kind of change
        (upsert into a table, patch of the same columns, delete)."""
        stages: list[dict[tuple[Any, ...], dict[Any, tuple[Any, ...]]]] = []
        last: dict[tuple[str, Any], tuple[int, tuple[Any, ...]]] = {}
        for kind, row in self._ops:
            t = self._t(kind[1])
            key = row[t.column_names.index(t.key)] if kind[0] == "upsert" else row[-1]
            before = last.get((t.name, key))
            stage = 0 if before is None else before[0] if before[1] == kind else before[0] + 1
            if stage == len(stages):
                stages.append({})
            stages[stage].setdefault(kind, {})[key] = row
            last[(t.name, key)] = (stage, kind)
        with self.store.batched(self.cur):
            for stage_ops in stages:
                for kind, by_key in stage_ops.items():
                    t, rows = self._t(kind[1]), list(by_key.values())
                    if kind[0] == "upsert":
                        self.store.upsert_many(self.cur, t, self.scratch, rows)
                    elif kind[0] == "patch":
                        self.store.patch_many(self.cur, t, self.scratch, kind[2], rows)
                    else:
                        self.store.delete_many(self.cur, t, self.scratch, [r[-1] for r in rows])
        self._ops = []
        self._dirty.clear()

    def finish(self) -> None:
        self.flush()
        if self._new_position is not None:
            self.store.write_position(self.cur, self.store.tracking_name(self.name, self.scratch), self._new_position)


class _SqlStore:
    param = "?"
    tables: dict[str, Table]
    queries = 0  # reads served (`get` and `rows`): tests count them to catch N+1 patterns

    def batched(self, cur: Any) -> Any:
        """Where the database can, send a flush's statements in one round trip."""
        return nullcontext()

    def tracking_name(self, name: str, scratch: Scratch) -> str:
        return name + suffix(scratch)

    def _tx(self) -> Any:  # a write transaction yielding a cursor (each store's own)
        raise NotImplementedError

    def _drop_scratch(self, cur: Any, name: str, tables: Sequence[Table], scratch: Scratch) -> None:
        for t in tables:
            cur.execute(f"DROP TABLE IF EXISTS {t.physical(scratch)}")
        cur.execute(f"DELETE FROM {POSITIONS} WHERE name = {self.param}", (self.tracking_name(name, scratch),))

    def drop_scratch(self, name: str, tables: Sequence[Table], scratch: Scratch = VERIFY) -> None:
        with self._tx() as cur:
            self._drop_scratch(cur, name, tables, scratch)

    def read_copy(self, name: str, tables: Sequence[Table], scratch: Scratch = True) -> HeldCopy:
        """A copy's rows and position (as `start_rebuild` left them), to hold
        in memory while the log is replayed into it."""
        with self._tx() as cur:
            position = self._copy_position(cur, name, scratch)
            rows: dict[str, dict[Any, dict[str, Any]]] = {}
            for t in tables:
                cur.execute(f"SELECT * FROM {t.physical(scratch)}")
                rows[t.name] = {(row := self.decode_row(t, r))[t.key]: row for r in cur.fetchall()}
        return HeldCopy(tables, position, rows)

    def write_copy(self, name: str, copy: HeldCopy, scratch: Scratch = True) -> None:
        """A held copy's changes since it was last written, and its position,
        in one transaction: new rows in bulk, changed ones upserted, gone
        ones deleted. Refused (`CopyMoved`) if the copy's position in the
        database is not the one it was read or last written at: another
        rebuild of the same projection is writing it."""
        with self._tx() as cur:
            at = self._copy_position(cur, name, scratch)
            if at != copy.written_position:
                raise CopyMoved(f"the {name} copy moved to position {at} while this rebuild held it at "
                                f"{copy.written_position}: is another rebuild of {name} running?")
            for t in copy.tables.values():
                new, changed, gone = copy.pending(t.name)
                cols = t.column_names
                if gone:
                    self.delete_many(cur, t, scratch, gone)
                if changed:
                    self.upsert_many(cur, t, scratch, [tuple(row[c] for c in cols) for row in changed])
                if new:
                    self.insert_new(cur, t, scratch, new, empty=not copy.stored[t.name])
            self.write_position(cur, self.tracking_name(name, scratch), copy.position)
        copy.written()

    def _copy_position(self, cur: Any, name: str, scratch: Scratch) -> int:
        raise NotImplementedError

    def insert_new(self, cur: Any, t: Table, scratch: Scratch, rows: list[dict[str, Any]], empty: bool = False) -> None:
        """Rows the table does not hold yet, in bulk (`empty`: it holds none)."""
        cols = t.column_names
        cur.executemany(f"INSERT INTO {t.physical(scratch)} ({', '.join(cols)}) "
                        f"VALUES ({', '.join([self.param] * len(cols))})",
                        [tuple(self.encode(t, c, row[c]) for c in cols) for row in rows])

    def upsert_sql(self, t: Table, scratch: Scratch) -> str:
        cols = t.column_names
        p = ", ".join([self.param] * len(cols))
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != t.key) or f"{t.key} = excluded.{t.key}"
        return (f"INSERT INTO {t.physical(scratch)} ({', '.join(cols)}) VALUES ({p}) "
                f"ON CONFLICT ({t.key}) DO UPDATE SET {updates}")

    def upsert_many(self, cur: Any, t: Table, scratch: Scratch, rows: list[tuple[Any, ...]]) -> None:
        cols = t.column_names
        cur.executemany(self.upsert_sql(t, scratch),
                        [tuple(self.encode(t, c, v) for c, v in zip(cols, row)) for row in rows])

    def patch_many(self, cur: Any, t: Table, scratch: Scratch, cols: tuple[str, ...],
                   rows: list[tuple[Any, ...]]) -> None:
        """`rows`: the new values of `cols`, then the key; one row per key."""
        p = self.param
        sets = ", ".join(f"{c} = {p}" for c in cols)
        cur.executemany(f"UPDATE {t.physical(scratch)} SET {sets} WHERE {t.key} = {p}",
                        [(*(self.encode(t, c, v) for c, v in zip(cols, row)), row[-1]) for row in rows])

    def select_many(self, cur: Any, t: Table, scratch: Scratch, keys: list[Any]) -> list[Any]:
        marks = ", ".join([self.param] * len(keys))
        cur.execute(f"SELECT * FROM {t.physical(scratch)} WHERE {t.key} IN ({marks})", keys)
        return cur.fetchall()

    def delete_many(self, cur: Any, t: Table, scratch: Scratch, keys: list[Any]) -> None:
        cur.executemany(f"DELETE FROM {t.physical(scratch)} WHERE {t.key} = {self.param}", [(k,) for k in keys])

    def encode(self, t: Table, col: str, v: Any) -> Any:
        if v is None:
            return None
        kind = t.kinds[col]
        if kind == "json":
            return json.dumps(v, sort_keys=True)
        if kind == "bool":
            return bool(v)
        return v

    def decode_row(self, t: Table, r: Any) -> dict[str, Any]:
        row = dict(r)
        for c, kind in t.columns:
            v = row.get(c)
            if v is None:
                continue
            if kind == "json" and isinstance(v, str):
                row[c] = json.loads(v)
            elif kind == "bool":
                row[c] = bool(v)
        return row

    def ddl(self, t: Table, scratch: Scratch) -> list[str]:
        """A live table with its indexes; a scratch copy with its key only:
        projections read rows by key, and an index is built faster in one go
        at the swap (`index_ddl`) than row by row through a rebuild."""
        cols = ", ".join(f"{c} {self.sql_type(k)}{' PRIMARY KEY' if c == t.key else ''}" for c, k in t.columns)
        return [f"CREATE TABLE IF NOT EXISTS {t.physical(scratch)} ({cols})"] + ([] if scratch else self.index_ddl(t, False))

    @staticmethod
    def index_ddl(t: Table, scratch: Scratch) -> list[str]:
        return [f"CREATE INDEX IF NOT EXISTS {t.physical(scratch)}_{ix}_ix ON {t.physical(scratch)} ({ix})"
                for ix in t.indexes]

    def sql_type(self, kind: str) -> str:
        raise NotImplementedError

    def write_position(self, cur: Any, name: str, position: int) -> None:
        """The new position; the projection has moved past its recorded error.
        (PostgreSQL overrides this with one statement: one round trip.)"""
        cur.execute(f"DELETE FROM {ERRORS} WHERE name = {self.param}", (name,))
        cur.execute(
            f"INSERT INTO {POSITIONS} (name, position) VALUES ({self.param}, {self.param}) "
            f"ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

    _DDL_ERRORS = (f"CREATE TABLE IF NOT EXISTS {ERRORS} (name TEXT PRIMARY KEY, position BIGINT NOT NULL, "
                   "error TEXT NOT NULL, first_at TEXT NOT NULL, last_at TEXT NOT NULL, attempts BIGINT NOT NULL)")
    # a failure again at the same position counts; at another, starts over
    _RECORD_ERROR = (f"INSERT INTO {ERRORS} AS e (name, position, error, first_at, last_at, attempts) "
                     "VALUES ({p}, {p}, {p}, {p}, {p}, 1) ON CONFLICT (name) DO UPDATE SET "
                     "error = excluded.error, last_at = excluded.last_at, position = excluded.position, "
                     "attempts = CASE WHEN e.position = excluded.position THEN e.attempts + 1 ELSE 1 END, "
                     "first_at = CASE WHEN e.position = excluded.position THEN e.first_at ELSE excluded.first_at END")

    def _record_error(self, cur: Any, name: str, current: int, position: int, error: str) -> None:
        """Inside a transaction holding the projection's lock (`current` is
        its committed position): a failure it has already moved past is news
        no longer."""
        if current > position:
            return
        at = now_iso()
        cur.execute(self._RECORD_ERROR.format(p=self.param), (name, position, error[:4000], at, at))

    def _errors_from(self, rows: Sequence[Any]) -> dict[str, ProjectionError]:
        return {r["name"]: ProjectionError(r["name"], int(r["position"]), r["error"], r["first_at"], r["last_at"],
                                           int(r["attempts"])) for r in rows}

    def _compare(self, cur: Any, name: str, tables: Sequence[Table],
                 catch_up: Callable[[ReadModelTx, int, int], None], live: int, scratch: Scratch, at: int,
                 limit: int) -> tuple[int, list[Difference]]:
        """The body of `compare`, inside the caller's transaction and lock:
        the copy caught up to `live`, then each table joined with it by key
        both ways (rows only one side has, and rows whose columns differ)."""
        tx = _SqlTx(self, cur, name, scratch, at)
        if tx.position < live:
            catch_up(tx, tx.position, live)
        tx.flush()
        out: list[Difference] = []
        for t in tables:
            cols = t.column_names
            both = ", ".join([f"a.{c} AS a{i}" for i, c in enumerate(cols)] + [f"b.{c} AS b{i}" for i, c in enumerate(cols)])
            differ = " OR ".join(f"a.{c} {self.distinct} b.{c}" for c in cols if c != t.key) or "FALSE"
            k = t.key
            for first, second in ((t.physical(), t.physical(scratch)), (t.physical(scratch), t.physical())):
                live_first = first == t.physical()
                where = f"b.{k} IS NULL" + (f" OR {differ}" if live_first else "")
                cur.execute(f"SELECT {both} FROM {first} a LEFT JOIN {second} b ON a.{k} = b.{k} "
                            f"WHERE {where} ORDER BY a.{k} LIMIT {int(limit)}")
                for r in cur.fetchall():
                    a = self.decode_row(t, {c: r[f"a{i}"] for i, c in enumerate(cols)})
                    b = (None if r[f"b{cols.index(k)}"] is None
                         else self.decode_row(t, {c: r[f"b{i}"] for i, c in enumerate(cols)}))
                    live_row, rebuilt = (a, b) if live_first else (b, a)
                    if b is None:
                        out.append(Difference(t.name, a[k], "extra" if live_first else "missing", live_row, rebuilt))
                    else:
                        assert live_row is not None and rebuilt is not None
                        changed = tuple(c for c in cols if live_row.get(c) != rebuilt.get(c))
                        if changed:  # (the SQL is the filter; equal after decoding is equal)
                            out.append(Difference(t.name, a[k], "differs", live_row, rebuilt, changed))
        return live, out

    distinct = "IS DISTINCT FROM"

    def _swap(self, cur: Any, name: str, tables: Sequence[Table],
              catch_up: Callable[[ReadModelTx, int, int], None], live: int, scratch: int) -> int:
        """The body of `swap`, inside the caller's transaction and lock."""
        tx = _SqlTx(self, cur, name, True, scratch)
        if tx.position < live:
            catch_up(tx, tx.position, live)
        tx.flush()
        for t in tables:
            cur.execute(f"DROP TABLE IF EXISTS {t.physical()}")
            cur.execute(f"ALTER TABLE {t.physical(True)} RENAME TO {t.physical()}")
            self._rename_indexes(cur, t)
        final = max(live, tx._new_position or tx.position)
        self.write_position(cur, name, final)
        cur.execute(f"DELETE FROM {POSITIONS} WHERE name = {self.param}", (name + SCRATCH,))
        return final

    def _rename_indexes(self, cur: Any, t: Table) -> None:
        raise NotImplementedError

    def _rows_sql(self, t: Table, where: dict[str, Any] | None, order_by: str | None,
                  limit: int | None, conditions: Sequence[Condition] = ()) -> tuple[str, list[Any]]:
        self.queries += 1
        sql, params = f"SELECT * FROM {t.physical()}", []
        conds = [(c, "=", v) for c, v in (where or {}).items()] + list(conditions)
        if conds:
            for c, op, _ in conds:
                assert c in t.column_names, f"unknown column {c}"
                assert op in OPERATORS, f"unknown operator {op}"
            parts: list[str] = []
            for c, op, v in conds:
                if op == "in":  # a batch (DataLoaders): one query for many keys
                    values = list(v) or [None]
                    parts.append(f"{c} IN ({', '.join([self.param] * len(values))})")
                    params += [self.encode(t, c, x) for x in values]
                else:
                    parts.append(f"{c} {op} {self.param}")
                    params.append(self.encode(t, c, v))
            sql += " WHERE " + " AND ".join(parts)
        if order_by:
            col, _, direction = order_by.partition(" ")
            assert col in t.column_names and direction.upper() in ("", "ASC", "DESC")
            sql += f" ORDER BY {col} {direction}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return sql, params


# ---------------------------------------------------------------- SQLite
class SQLiteReadModelStore(_SqlStore):
    """Read models in an SQLite file (WAL mode; one connection per thread)."""

    param = "?"
    distinct = "IS NOT"  # SQLite's IS DISTINCT FROM

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tables = {}
        self._local = threading.local()
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")
            c.execute(self._DDL_ERRORS)

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = c
        return c

    def sql_type(self, kind: str) -> str:
        return {"text": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER", "json": "TEXT"}[kind]

    def install(self, tables: Sequence[Table]) -> None:
        c = self._conn()
        for t in tables:
            self.tables[t.name] = t
            for sql in self.ddl(t, False):
                c.execute(sql)

    @contextmanager
    def transaction(self, name: str, scratch: Scratch = False) -> Iterator[_SqlTx]:
        with self._tx() as cur:
            tx = _SqlTx(self, cur, name, scratch, self._read_position(cur, self.tracking_name(name, scratch)))
            yield tx
            tx.finish()

    def _read_position(self, cur: Any, name: str) -> int:
        cur.execute(f"SELECT position FROM {POSITIONS} WHERE name = ?", (name,))
        r = cur.fetchone()
        return int(r[0]) if r else 0

    def position(self, name: str) -> int:
        return self._read_position(self._conn().cursor(), name)

    def _copy_position(self, cur: Any, name: str, scratch: Scratch) -> int:
        return self._read_position(cur, self.tracking_name(name, scratch))

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        self.queries += 1
        t = self.tables[table]
        r = self._conn().execute(f"SELECT * FROM {t.physical()} WHERE {t.key} = ?", (key,)).fetchone()
        return None if r is None else self.decode_row(t, r)

    def rows(self, table: str, where: dict[str, Any] | None = None, order_by: str | None = None,
             limit: int | None = None, conditions: Sequence[Condition] = ()) -> list[dict[str, Any]]:
        t = self.tables[table]
        sql, params = self._rows_sql(t, where, order_by, limit, conditions)
        return [self.decode_row(t, r) for r in self._conn().execute(sql, params).fetchall()]

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False, scratch: Scratch = True) -> int:
        for t in tables:
            self.tables[t.name] = t
        with self._tx() as cur:
            if fresh:
                self._drop_scratch(cur, name, tables, scratch)
            for t in tables:
                for sql in self.ddl(t, scratch):
                    cur.execute(sql)
        return self.position(self.tracking_name(name, scratch))

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A write transaction: SQLite's one writer at a time (so it excludes
        the live projector too)."""
        with sqlite_transaction(self._conn()) as cur:
            yield cur

    def compare(self, name: str, tables: Sequence[Table], catch_up: Callable[[ReadModelTx, int, int], None],
                scratch: Scratch = VERIFY, limit: int = 1000) -> tuple[int, list[Difference]]:
        with self._tx() as cur:
            return self._compare(cur, name, tables, catch_up, self._read_position(cur, name), scratch,
                                 self._read_position(cur, self.tracking_name(name, scratch)), limit)

    @contextmanager
    def snapshot(self, name: str) -> Iterator[Snapshot]:
        """A read transaction: in WAL mode it sees the database as of its
        first read, while writers go on."""
        c = self._conn()
        c.execute("BEGIN")
        try:
            cur = c.cursor()
            position = self._read_position(cur, name)  # the first read: the snapshot starts here

            def rows(table: str) -> Iterator[dict[str, Any]]:
                t = self.tables[table]
                for r in c.execute(f"SELECT * FROM {t.physical()} ORDER BY {t.key}"):
                    yield self.decode_row(t, r)

            yield Snapshot(position, rows)
        finally:
            c.execute("COMMIT")

    def record_error(self, name: str, position: int, error: str) -> None:
        with self._tx() as cur:
            self._record_error(cur, name, self._read_position(cur, name), position, error)

    def errors(self) -> dict[str, ProjectionError]:
        return self._errors_from(self._conn().execute(f"SELECT * FROM {ERRORS}").fetchall())

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int:
        with self._tx() as cur:  # excludes the live projector's writes
            return self._swap(cur, name, tables, catch_up, self._read_position(cur, name),
                              self._read_position(cur, name + SCRATCH))

    def _rename_indexes(self, cur: Any, t: Table) -> None:
        for ix in t.indexes:  # SQLite keeps an index's name: make the live ones anew
            cur.execute(f"DROP INDEX IF EXISTS {t.physical(True)}_{ix}_ix")
        for sql in self.index_ddl(t, False):
            cur.execute(sql)

    def ping(self) -> None:
        self._conn().execute("SELECT 1")

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


# ---------------------------------------------------------------- PostgreSQL
class PostgresReadModelStore(_SqlStore):
    """Read models in PostgreSQL (a connection pool; row locks on positions)."""

    param = "%s"

    def __init__(self, database_url: str, setting: str = "ATTENDWISE_DATABASE_URL", pool_size: int = 8) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._unavailable = (psycopg.OperationalError, PoolTimeout)
        self.tables = {}
        self._setting, self._url = setting, database_url
        try:
            self.pool = ConnectionPool(database_url, min_size=1, max_size=pool_size, open=True, timeout=POOL_WAIT,
                                       check=ConnectionPool.check_connection,  # a restart's dead ones replaced
                                       kwargs={"row_factory": dict_row, "connect_timeout": 5})
            self.pool.wait(timeout=10)
        except Exception as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("PostgreSQL", setting, database_url.split("@")[-1], e) from e
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")  # processes starting together
            cur.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name text PRIMARY KEY, position bigint NOT NULL)")
            cur.execute(self._DDL_ERRORS)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except self._unavailable as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._url.split("@")[-1], e) from e

    def sql_type(self, kind: str) -> str:
        """Text compares as bytes, as in SQLite: the same order on both stores
        (code points, which is also what the C.UTF-8 collation `infra/`
        gives), and PostgreSQL sorts it with abbreviated keys: a rebuild's
        swap builds its indexes in 40% less time than with a libc collation.
        (Live tables made before keep the database's collation until rebuilt;
        equality is the same in both.)"""
        return {"text": 'text COLLATE "C"', "int": "bigint", "float": "double precision", "bool": "boolean",
                "json": "jsonb"}[kind]

    def encode(self, t: Table, col: str, v: Any) -> Any:
        if v is not None and t.kinds[col] == "json":
            from psycopg.types.json import Jsonb

            return Jsonb(v)
        return super().encode(t, col, v)

    _ARRAY = {"text": "text[]", "int": "bigint[]", "float": "float8[]", "bool": "bool[]", "json": "text[]"}

    def batched(self, cur: Any) -> Any:
        """psycopg's pipeline mode: a flush's statements (several tables per
        event) travel together instead of one round trip each."""
        return cur.connection.pipeline()

    def upsert_many(self, cur: Any, t: Table, scratch: Scratch, rows: list[tuple[Any, ...]]) -> None:
        """One INSERT ... SELECT FROM unnest(column arrays) ... ON CONFLICT for the whole run."""
        if len(rows) < 4:
            return super().upsert_many(cur, t, scratch, rows)
        cols = t.column_names
        kinds = t.kinds
        arrays = []
        for idx, c in enumerate(cols):
            values = [row[idx] for row in rows]
            if kinds[c] == "json":
                values = [None if v is None else json.dumps(v, sort_keys=True) for v in values]
            arrays.append(values)
        select = ", ".join(f"{c}::jsonb" if kinds[c] == "json" else c for c in cols)
        unnest = ", ".join(f"%b::{self._ARRAY[kinds[c]]}" for c in cols)  # binary: no quoting of each element
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != t.key) or f"{t.key} = excluded.{t.key}"
        cur.execute(f"INSERT INTO {t.physical(scratch)} ({', '.join(cols)}) SELECT {select} "
                    f"FROM unnest({unnest}) AS u({', '.join(cols)}) "
                    f"ON CONFLICT ({t.key}) DO UPDATE SET {updates}", arrays, binary=True)

    def _array(self, t: Table, col: str, values: list[Any]) -> list[Any]:
        kind = t.kinds[col]
        if kind == "json":
            return [None if v is None else json.dumps(v, sort_keys=True) for v in values]
        if kind == "bool":
            return [None if v is None else bool(v) for v in values]
        return values

    def patch_many(self, cur: Any, t: Table, scratch: Scratch, cols: tuple[str, ...],
                   rows: list[tuple[Any, ...]]) -> None:
        """One UPDATE ... FROM unnest(column arrays) for the whole run."""
        if len(rows) < 4:
            return super().patch_many(cur, t, scratch, cols, rows)
        kinds = t.kinds
        arrays = [self._array(t, c, [row[i] for row in rows]) for i, c in enumerate(cols)] + [[r[-1] for r in rows]]
        types = [self._ARRAY[kinds[c]] for c in cols] + [self._ARRAY[kinds[t.key]]]
        names = [f"aw_v{i}" for i in range(len(cols))] + ["aw_key"]
        sets = ", ".join(f"{c} = u.aw_v{i}{'::jsonb' if kinds[c] == 'json' else ''}" for i, c in enumerate(cols))
        cur.execute(f"UPDATE {t.physical(scratch)} SET {sets} "
                    f"FROM unnest({', '.join(f'%b::{ty}' for ty in types)}) AS u({', '.join(names)}) "
                    f"WHERE {t.physical(scratch)}.{t.key} = u.aw_key", arrays, binary=True)

    def select_many(self, cur: Any, t: Table, scratch: Scratch, keys: list[Any]) -> list[Any]:
        cur.execute(f"SELECT * FROM {t.physical(scratch)} WHERE {t.key} = ANY(%b::{self._ARRAY[t.kinds[t.key]]})",
                    [keys])
        return cur.fetchall()

    def delete_many(self, cur: Any, t: Table, scratch: Scratch, keys: list[Any]) -> None:
        if len(keys) < 4:
            return super().delete_many(cur, t, scratch, keys)
        cur.execute(f"DELETE FROM {t.physical(scratch)} WHERE {t.key} = ANY(%b::{self._ARRAY[t.kinds[t.key]]})",
                    [keys], binary=True)

    def install(self, tables: Sequence[Table]) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")  # concurrent installers
            for t in tables:
                self.tables[t.name] = t
                for sql in self.ddl(t, False):
                    cur.execute(sql)

    def _lock_position(self, cur: Any, name: str) -> int:
        cur.execute(f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING", (name,))
        cur.execute(f"SELECT position FROM {POSITIONS} WHERE name = %s FOR UPDATE", (name,))
        return int(cur.fetchone()["position"])

    def _copy_position(self, cur: Any, name: str, scratch: Scratch) -> int:
        return self._lock_position(cur, self.tracking_name(name, scratch))

    BULK_KEY_AFTER = 10_000  # rows loaded into an empty table from which its key is built after the load

    def insert_new(self, cur: Any, t: Table, scratch: Scratch, rows: list[dict[str, Any]], empty: bool = False) -> None:
        """COPY: the bulk path, several times cheaper than INSERT for the
        database and for psycopg (rows are encoded in C). Into an empty
        table, many rows go in without its primary key, built after in one
        sort: a third less work for the database than keeping the key's
        index up to date row by row (all in the caller's transaction)."""
        table = t.physical(scratch)
        key_after = empty and len(rows) >= self.BULK_KEY_AFTER
        if key_after:
            cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey")
        self._copy(cur, t, table, rows)
        if key_after:
            cur.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({t.key})")

    def _copy(self, cur: Any, t: Table, table: str, rows: list[dict[str, Any]]) -> None:
        cols = t.column_names
        converted = [(cols.index(c), kind) for c, kind in t.converted]
        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                values = [row[c] for c in cols]
                for i, kind in converted:
                    if values[i] is not None:
                        values[i] = _json_text(values[i]) if kind == "json" else bool(values[i])
                copy.write_row(values)

    def write_position(self, cur: Any, name: str, position: int) -> None:
        cur.execute(f"WITH cleared AS (DELETE FROM {ERRORS} WHERE name = %s) "
                    f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, %s) "
                    f"ON CONFLICT (name) DO UPDATE SET position = excluded.position", (name, name, position))

    @contextmanager
    def transaction(self, name: str, scratch: Scratch = False) -> Iterator[_SqlTx]:
        with self._tx() as cur:
            tx = _SqlTx(self, cur, name, scratch, self._lock_position(cur, self.tracking_name(name, scratch)))
            yield tx
            tx.finish()

    def position(self, name: str) -> int:
        with self._tx() as cur:
            cur.execute(f"SELECT position FROM {POSITIONS} WHERE name = %s", (name,))
            r = cur.fetchone()
            return int(r["position"]) if r else 0

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        self.queries += 1
        t = self.tables[table]
        with self._tx() as cur:
            cur.execute(f"SELECT * FROM {t.physical()} WHERE {t.key} = %s", (key,))
            r = cur.fetchone()
        return None if r is None else self.decode_row(t, r)

    def rows(self, table: str, where: dict[str, Any] | None = None, order_by: str | None = None,
             limit: int | None = None, conditions: Sequence[Condition] = ()) -> list[dict[str, Any]]:
        t = self.tables[table]
        sql, params = self._rows_sql(t, where, order_by, limit, conditions)
        with self._tx() as cur:
            cur.execute(sql, params)
            return [self.decode_row(t, r) for r in cur.fetchall()]

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False, scratch: Scratch = True) -> int:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")
            if fresh:
                self._drop_scratch(cur, name, tables, scratch)
            for t in tables:
                self.tables[t.name] = t
                for sql in self.ddl(t, scratch):
                    cur.execute(sql)
        return self.position(self.tracking_name(name, scratch))

    def compare(self, name: str, tables: Sequence[Table], catch_up: Callable[[ReadModelTx, int, int], None],
                scratch: Scratch = VERIFY, limit: int = 1000) -> tuple[int, list[Difference]]:
        with self._tx() as cur:
            live = self._lock_position(cur, name)  # waits for, then holds off, the live projector
            return self._compare(cur, name, tables, catch_up, live, scratch,
                                 self._lock_position(cur, self.tracking_name(name, scratch)), limit)

    @contextmanager
    def snapshot(self, name: str, page: int = 5000) -> Iterator[Snapshot]:
        """A REPEATABLE READ, READ ONLY transaction: one snapshot of every
        table and the position, without locking out the projector; rows are
        streamed (a server-side cursor per table)."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                r = conn.execute(f"SELECT position FROM {POSITIONS} WHERE name = %s", (name,)).fetchone()

                def rows(table: str) -> Iterator[dict[str, Any]]:
                    t = self.tables[table]
                    with conn.cursor(name=f"snapshot_{t.name}") as cur:
                        cur.itersize = page
                        cur.execute(f"SELECT * FROM {t.physical()} ORDER BY {t.key}")
                        for row in cur:
                            yield self.decode_row(t, row)

                yield Snapshot(int(r["position"]) if r else 0, rows)
        except self._unavailable as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._url.split("@")[-1], e) from e

    def record_error(self, name: str, position: int, error: str) -> None:
        with self._tx() as cur:
            self._record_error(cur, name, self._lock_position(cur, name), position, error)

    def errors(self) -> dict[str, ProjectionError]:
        with self._tx() as cur:
            cur.execute(f"SELECT * FROM {ERRORS}")
            return self._errors_from(cur.fetchall())

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int:
        with self._tx() as cur:  # the copy's indexes first, without holding off the live projector
            for t in tables:
                for sql in self.index_ddl(t, True):
                    cur.execute(sql)
        with self._tx() as cur:
            live = self._lock_position(cur, name)  # waits for, then excludes, the live projector
            return self._swap(cur, name, tables, catch_up, live, self._lock_position(cur, name + SCRATCH))

    def _rename_indexes(self, cur: Any, t: Table) -> None:
        for ix in t.indexes:
            cur.execute(f"ALTER INDEX IF EXISTS {t.physical(True)}_{ix}_ix RENAME TO {t.physical()}_{ix}_ix")
        cur.execute(f"ALTER INDEX IF EXISTS {t.physical(True)}_pkey RENAME TO {t.physical()}_pkey")

    def ping(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()
