"""Export a projection's read-model tables for analysis: Parquet (pyarrow)
or CSV, one file per table, all read from one snapshot of the read-model
store, so the files agree with each other and with one log position.

The position goes with every file: in a sidecar `<table>.position` (the
number and a newline), and in Parquet also in the schema's metadata
(`attendwise.position`, beside `attendwise.projection`, `attendwise.table`,
`attendwise.key` and `attendwise.exported_at`).

Types: text -> string, int -> int64, float -> float64, bool -> bool, json ->
a string of JSON with sorted keys (field metadata `attendwise.kind: json`).
CSV: a header row, every value quoted, nulls empty and unquoted, so an
empty string (`""`) and a null stay apart (pyarrow reads them back apart
with `strings_can_be_null=True, quoted_strings_can_be_null=False`).

A file is written under a temporary name and renamed when complete: an
interrupted export leaves no file that looks whole.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from adapters.readmodels import ReadModelStore, Table

FORMATS = ("parquet", "csv")
ARROW = {"text": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "json": pa.string()}
PAGE = 10_000


@dataclass(frozen=True)
class ExportedTable:
    table: str
    path: Path
    rows: int


@dataclass(frozen=True)
class Export:
    projection: str
    position: int  # the log position every file reflects
    tables: list[ExportedTable]


def arrow_schema(t: Table, metadata: dict[str, str]) -> pa.Schema:
    fields = [pa.field(c, ARROW[kind], metadata={"attendwise.kind": kind}) for c, kind in t.columns]
    return pa.schema(fields, metadata={**metadata, "attendwise.table": t.name, "attendwise.key": t.key})


def _batches(t: Table, schema: pa.Schema, rows: Iterator[dict[str, Any]]) -> Iterator[pa.RecordBatch]:
    cols = t.column_names
    json_cols = {c for c, kind in t.columns if kind == "json"}
    page: list[dict[str, Any]] = []

    def batch() -> pa.RecordBatch:
        data = {c: [None if r.get(c) is None else (json.dumps(r[c], sort_keys=True) if c in json_cols else r[c])
                    for r in page] for c in cols}
        return pa.RecordBatch.from_pydict(data, schema=schema)

    for row in rows:
        page.append(row)
        if len(page) == PAGE:
            yield batch()
            page = []
    if page:
        yield batch()


def _write(fmt: str, path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
    n = 0
    if fmt == "parquet":
        with pq.ParquetWriter(path, schema, compression="zstd") as w:
            for b in batches:
                w.write_batch(b)
                n += b.num_rows
    else:
        options = pacsv.WriteOptions(quoting_style="all_valid")
        with pacsv.CSVWriter(path, schema, write_options=options) as w:
            for b in batches:
                w.write_batch(b)
                n += b.num_rows
    return n


def export_projection(store: ReadModelStore, projection: str, tables: Sequence[Table], fmt: str,
                      out: Path) -> Export:
    """Writes `<out>/<table>.<fmt>` and `<out>/<table>.position` for each of
    the projection's tables, from one snapshot; returns what it wrote."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    done: list[ExportedTable] = []
    with store.snapshot(projection) as snap:
        metadata = {"attendwise.projection": projection, "attendwise.position": str(snap.position),
                    "attendwise.exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        for t in tables:
            schema = arrow_schema(t, metadata)
            path = out / f"{t.name}.{fmt}"
            partial = path.with_name(path.name + ".partial")
            n = _write(fmt, partial, schema, _batches(t, schema, snap.rows(t.name)))
            os.replace(partial, path)
            (out / f"{t.name}.position").write_text(f"{snap.position}\n")
            done.append(ExportedTable(t.name, path, n))
    return Export(projection, snap.position, done)


def read_position(path: Path) -> int:
    """The log position an exported file reflects (its sidecar)."""
    return int(path.with_suffix(".position").read_text().strip())
