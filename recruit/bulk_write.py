"""Many rows into a table at once, by each engine's fastest path: the one bulk writer.

Loading an extract (staging tables), copying a database, storing codelists and reading a truth
file all write thousands to millions of rows; they all come here, so each engine's fast path is
written once:

- PostgreSQL (psycopg): COPY, several times faster than batched INSERTs.
- DuckDB: one JSON file of column arrays per batch, read by DuckDB itself (its parameter
  binding manages only a few thousand rows a second).
- SQLite and anything else: the DBAPI's executemany on plain tuples, skipping SQLAlchemy's
  per-row parameter processing (it costs more than SQLite's insert itself).

Rows are plain tuples in the order of the column names given, with values as the driver takes
them (dates as date objects or ISO text). A copy of another database passes `typed=True`: its
values are as SQLAlchemy reads them (times with their zone), which only SQLAlchemy's own types
write back exactly as SQLite stores them, so where there is no COPY or DuckDB they go through
SQLAlchemy. Nothing here looks at rows one by one in Python, except psycopg's COPY writer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Table,
)
from sqlalchemy.types import TypeDecorator

Row = Sequence[Any]


def insert_rows(
    conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Row], *, typed: bool = False
) -> None:
    """One batch of rows (tuples in the order of `names`) into `table`, by the engine's bulk path.

    `typed`: the values are as SQLAlchemy reads them from a database (see the module's note)."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        _copy_postgres(conn, table, names, rows)
    elif dialect.name == "duckdb":
        _read_json_duckdb(conn, table, names, rows)
    elif typed:
        conn.execute(_stored(table).insert(), [dict(zip(names, row, strict=True)) for row in rows])
    else:
        conn.exec_driver_sql(_insert_sql(table.name, tuple(names), dialect.paramstyle), rows)


def write_rows(
    conn: Connection,
    table: Table,
    rows: Iterable[Row],
    names: Sequence[str] | None = None,
    batch: int = 20_000,
) -> int:
    """Every row of an iterable (a million stays cheap: one batch in memory at a time), in
    batches of `batch`; `names` default to all the table's columns. Returns how many."""
    columns = [c.name for c in table.columns] if names is None else list(names)
    it = iter(rows)
    n = 0
    while chunk := list(islice(it, batch)):
        insert_rows(conn, table, columns, chunk)
        n += len(chunk)
    return n


class BulkWriter:
    """Buffers rows for several tables and writes each table's in batches (a load's staging).

    This is the hot path of a load: adding a row is one list append."""

    def __init__(self, conn: Connection, tables: Iterable[Table], batch: int = 5000) -> None:
        self.conn = conn
        self.batch = batch
        self.tables = {t.name: t for t in tables}
        self.columns = {name: [c.name for c in t.columns] for name, t in self.tables.items()}
        self.buffers: dict[str, list[Row]] = {name: [] for name in self.tables}

    def add(self, table: Table, row: Row) -> None:
        buffer = self.buffers[table.name]
        buffer.append(row)
        if len(buffer) >= self.batch:
            self.flush(table.name)

    def add_many(self, name: str, rows: Sequence[Row]) -> None:
        buffer = self.buffers[name]
        buffer.extend(rows)
        if len(buffer) >= self.batch:
            self.flush(name)

    def flush(self, name: str | None = None) -> None:
        """Write what is buffered (for one table, or all)."""
        for table_name in [name] if name else list(self.buffers):
            rows = self.buffers[table_name]
            if rows:
                insert_rows(self.conn, self.tables[table_name], self.columns[table_name], rows)
                self.buffers[table_name] = []


# --- each engine's path ----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _insert_sql(table: str, names: tuple[str, ...], paramstyle: str) -> str:
    marks = {
        "qmark": ["?"] * len(names),
        "numeric_dollar": [f"${i}" for i in range(1, len(names) + 1)],
    }.get(paramstyle, ["%s"] * len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(marks)})"


def _copy_postgres(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Row]) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _stored(table: Table) -> Table:
    """The table with JSON columns as the plain text they are stored as (copied, not re-encoded)."""
    columns = [
        Column(c.name, c.type.impl if isinstance(c.type, TypeDecorator) else c.type) for c in table.columns
    ]
    return Table(table.name, MetaData(), *columns)


def _duckdb_type(column: Column[Any]) -> str:
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, Boolean):
        return "BOOLEAN"
    if isinstance(kind, BigInteger):
        return "BIGINT"
    if isinstance(kind, Integer):
        return "INTEGER"
    if isinstance(kind, Float):
        return "DOUBLE"
    if isinstance(kind, DateTime):
        return "TIMESTAMPTZ" if kind.timezone else "TIMESTAMP"
    if isinstance(kind, Date):
        return "DATE"
    return "VARCHAR"


def _json_default(value: Any) -> Any:
    """orjson writes dates and times itself; anything else in a recruit table is a bug."""
    raise TypeError(f"recruit cannot write a value of type {type(value).__name__}")


def _read_json_duckdb(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Row]) -> None:
    """One JSON object of column arrays per batch, unnested by DuckDB's own JSON reader."""
    # Plain str keys: orjson refuses str subclasses (SQLAlchemy's quoted column names).
    columns = {str(name): list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}
    fd, path = tempfile.mkstemp(prefix="recruit-rows-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(columns, default=_json_default))
        spec = ", ".join(f"'{name}': '{_duckdb_type(table.c[name])}[]'" for name in names)
        unnest = ", ".join(f'unnest("{name}")' for name in names)
        quoted = ", ".join(f'"{name}"' for name in names)
        where = str(Path(path)).replace("'", "''")
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({quoted}) SELECT {unnest} FROM read_json('{where}', "
            f"format='unstructured', maximum_object_size=2147483647, columns={{{spec}}})"
        )
    finally:
        os.unlink(path)
