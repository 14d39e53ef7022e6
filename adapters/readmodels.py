"""Read-model stores: the tables projections write and GraphQL reads.

Port `ReadModelStore` (contract below), adapters for SQLite (embedded) and
PostgreSQL (full mode), both tested by tests/contract/test_readmodel_store.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.errors import ServiceUnavailable

POSITIONS = "projection_positions"
OPERATORS = ("=", "<", "<=", ">", ">=", "in")
Condition = tuple[str, str, Any]
SCRATCH = "__next"
TYPES = {"text", "int", "float", "bool", "json"}


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

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def kinds(self) -> dict[str, str]:
        return dict(self.columns)

    def physical(self, scratch: bool = False) -> str:
        return f"rm_{self.name}{SCRATCH if scratch else ''}"


class ReadModelTx(Protocol):
    """One atomic unit of projection work. Writes and the new position commit
    together or not at all (exactly-once effect of each event)."""

    position: int  # the projection's position when the transaction began

    def upsert(self, table: str, row: dict[str, Any]) -> None: ...

    def patch(self, table: str, key: Any, changes: dict[str, Any]) -> None: ...

    def delete(self, table: str, key: Any) -> None: ...

    def get(self, table: str, key: Any) -> dict[str, Any] | None: ...

    def set_position(self, position: int) -> None: ...


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
    """

    def install(self, tables: Sequence[Table]) -> None: ...

    @contextmanager
    def transaction(self, name: str, scratch: bool = False) -> Iterator[ReadModelTx]: ...

    def position(self, name: str) -> int: ...

    def get(self, table: str, key: Any) -> dict[str, Any] | None: ...

    def rows(self, table: str, where: dict[str, Any] | None = None, order_by: str | None = None,
             limit: int | None = None, conditions: Sequence[Condition] = ()) -> list[dict[str, Any]]:
        """Live rows matching `where` (equality) and `conditions` ((column,
        op, value) with op one of = < <= > >=), ordered, at most `limit`."""
        ...

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False) -> int: ...

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- shared SQL
class _SqlTx:
    """Buffers writes and flushes them with executemany (one round trip per run
    of like statements): the rebuild path writes hundreds of thousands of rows."""

    def __init__(self, store: "_SqlStore", cur: Any, name: str, scratch: bool, position: int) -> None:
        self.store, self.cur, self.name, self.scratch = store, cur, name, scratch
        self.position = position
        self._new_position: int | None = None
        self._ops: list[tuple[str, tuple[Any, ...]]] = []

    def _t(self, table: str) -> Table:
        return self.store.tables[table]

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        t = self._t(table)
        self._ops.append((("upsert", t), tuple(row.get(c) for c in t.column_names)))

    def patch(self, table: str, key: Any, changes: dict[str, Any]) -> None:
        t = self._t(table)
        cols = sorted(changes)
        p = self.store.param
        sets = ", ".join(f"{c} = {p}" for c in cols)
        sql = f"UPDATE {t.physical(self.scratch)} SET {sets} WHERE {t.key} = {p}"
        self._ops.append((sql, (*(self.store.encode(t, c, changes[c]) for c in cols), key)))

    def delete(self, table: str, key: Any) -> None:
        t = self._t(table)
        self._ops.append((f"DELETE FROM {t.physical(self.scratch)} WHERE {t.key} = {self.store.param}", (key,)))

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        self.flush()
        t = self._t(table)
        self.cur.execute(f"SELECT * FROM {t.physical(self.scratch)} WHERE {t.key} = {self.store.param}", (key,))
        r = self.cur.fetchone()
        return None if r is None else self.store.decode_row(t, r)

    def set_position(self, position: int) -> None:
        self._new_position = position

    def flush(self) -> None:
        """Runs of like operations go to the database together; a run of
        upserts of one table is one statement (the last upsert of a key wins,
        as it would row by row)."""
        i = 0
        ops = self._ops
        with self.store.batched(self.cur):
            while i < len(ops):
                j = i
                while j < len(ops) and ops[j][0] == ops[i][0]:
                    j += 1
                op, run = ops[i][0], [o[1] for o in ops[i:j]]
                if isinstance(op, tuple):
                    t = op[1]
                    k = t.column_names.index(t.key)
                    latest = list({row[k]: row for row in run}.values())
                    self.store.upsert_many(self.cur, t, self.scratch, latest)
                else:
                    self.cur.executemany(op, run)
                i = j
        self._ops = []

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

    def tracking_name(self, name: str, scratch: bool) -> str:
        return name + SCRATCH if scratch else name

    def upsert_sql(self, t: Table, scratch: bool) -> str:
        cols = t.column_names
        p = ", ".join([self.param] * len(cols))
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != t.key) or f"{t.key} = excluded.{t.key}"
        return (f"INSERT INTO {t.physical(scratch)} ({', '.join(cols)}) VALUES ({p}) "
                f"ON CONFLICT ({t.key}) DO UPDATE SET {updates}")

    def upsert_many(self, cur: Any, t: Table, scratch: bool, rows: list[tuple[Any, ...]]) -> None:
        cols = t.column_names
        cur.executemany(self.upsert_sql(t, scratch),
                        [tuple(self.encode(t, c, v) for c, v in zip(cols, row)) for row in rows])

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

    def ddl(self, t: Table, scratch: bool) -> list[str]:
        cols = ", ".join(f"{c} {self.sql_type(k)}{' PRIMARY KEY' if c == t.key else ''}" for c, k in t.columns)
        out = [f"CREATE TABLE IF NOT EXISTS {t.physical(scratch)} ({cols})"]
        for ix in t.indexes:
            out.append(f"CREATE INDEX IF NOT EXISTS {t.physical(scratch)}_{ix}_ix ON {t.physical(scratch)} ({ix})")
        return out

    def sql_type(self, kind: str) -> str:
        raise NotImplementedError

    def write_position(self, cur: Any, name: str, position: int) -> None:
        cur.execute(
            f"INSERT INTO {POSITIONS} (name, position) VALUES ({self.param}, {self.param}) "
            f"ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tables = {}
        self._local = threading.local()
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")

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
    def transaction(self, name: str, scratch: bool = False) -> Iterator[_SqlTx]:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            cur = c.cursor()
            tx = _SqlTx(self, cur, name, scratch, self._read_position(cur, self.tracking_name(name, scratch)))
            yield tx
            tx.finish()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _read_position(self, cur: Any, name: str) -> int:
        cur.execute(f"SELECT position FROM {POSITIONS} WHERE name = ?", (name,))
        r = cur.fetchone()
        return int(r[0]) if r else 0

    def position(self, name: str) -> int:
        return self._read_position(self._conn().cursor(), name)

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

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False) -> int:
        c = self._conn()
        for t in tables:
            self.tables[t.name] = t
        c.execute("BEGIN IMMEDIATE")
        try:
            if fresh:
                for t in tables:
                    c.execute(f"DROP TABLE IF EXISTS {t.physical(True)}")
                c.execute(f"DELETE FROM {POSITIONS} WHERE name = ?", (name + SCRATCH,))
            for t in tables:
                for sql in self.ddl(t, True):
                    c.execute(sql)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return self.position(name + SCRATCH)

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")  # excludes the live projector's writes
        try:
            cur = c.cursor()
            final = self._swap(cur, name, tables, catch_up, self._read_position(cur, name),
                               self._read_position(cur, name + SCRATCH))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return final

    def _rename_indexes(self, cur: Any, t: Table) -> None:
        for ix in t.indexes:  # SQLite keeps an index's name: make the live one anew
            cur.execute(f"DROP INDEX IF EXISTS {t.physical(True)}_{ix}_ix")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {t.physical()}_{ix}_ix ON {t.physical()} ({ix})")

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
            self.pool = ConnectionPool(database_url, min_size=1, max_size=pool_size, open=True, timeout=10,
                                       kwargs={"row_factory": dict_row, "connect_timeout": 5})
            self.pool.wait(timeout=10)
        except Exception as e:  # noqa: BLE001 - translated
            raise ServiceUnavailable("PostgreSQL", setting, database_url.split("@")[-1], e) from e
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")  # processes starting together
            cur.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name text PRIMARY KEY, position bigint NOT NULL)")

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except self._unavailable as e:
            raise ServiceUnavailable("PostgreSQL", self._setting, self._url.split("@")[-1], e) from e

    def sql_type(self, kind: str) -> str:
        return {"text": "text", "int": "bigint", "float": "double precision", "bool": "boolean", "json": "jsonb"}[kind]

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

    def upsert_many(self, cur: Any, t: Table, scratch: bool, rows: list[tuple[Any, ...]]) -> None:
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
        unnest = ", ".join(f"%s::{self._ARRAY[kinds[c]]}" for c in cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != t.key) or f"{t.key} = excluded.{t.key}"
        cur.execute(f"INSERT INTO {t.physical(scratch)} ({', '.join(cols)}) SELECT {select} "
                    f"FROM unnest({unnest}) AS u({', '.join(cols)}) "
                    f"ON CONFLICT ({t.key}) DO UPDATE SET {updates}", arrays, binary=True)

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

    @contextmanager
    def transaction(self, name: str, scratch: bool = False) -> Iterator[_SqlTx]:
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

    def start_rebuild(self, name: str, tables: Sequence[Table], fresh: bool = False) -> int:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")
            for t in tables:
                self.tables[t.name] = t
                if fresh:
                    cur.execute(f"DROP TABLE IF EXISTS {t.physical(True)}")
                for sql in self.ddl(t, True):
                    cur.execute(sql)
            if fresh:
                cur.execute(f"DELETE FROM {POSITIONS} WHERE name = %s", (name + SCRATCH,))
        return self.position(name + SCRATCH)

    def swap(self, name: str, tables: Sequence[Table],
             catch_up: Callable[[ReadModelTx, int, int], None]) -> int:
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
