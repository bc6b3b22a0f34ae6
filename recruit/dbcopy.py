"""Copy a whole recruit database into another one: SQLite, PostgreSQL or DuckDB, either way.

The usual use is a region-wide search: practices' extracts are loaded into SQLite or PostgreSQL
(recruit load), then copied into a DuckDB file, the embedded analytic engine that searches a
million patients in seconds. The target's schema is made by the same Alembic migrations as the
source's (recruit.duckdb_support translates them for DuckDB), so both are at one revision and
the copy is table by table, column by column, in one transaction on the target: stopped half way,
it leaves the target as it was.

A copy with replace deletes the target's rows first, and the target's history (GP decisions,
review sheets, letter batches, invitations with their replies, study numbers) is the record of
who must not be written to again: a target holding history the source lacks is refused
(HistoryWouldBeLost) unless delete_history is given, since otherwise the next search there would
write to those people again. Folders still being written (work_folder) belong to the database
whose command made them: they are neither copied nor deleted, so a killed run's leftovers are
still cleaned by the next command on that database.

Rows travel in batches by each engine's bulk path (recruit.bulk_write: COPY on PostgreSQL, a
JSON batch file read by DuckDB itself, executemany elsewhere). Plain indexes are dropped during
the copy and built again afterwards (one sort instead of millions of index updates), then the
planner's statistics are refreshed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    Row,
    Table,
    delete,
    func,
    inspect,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from recruit.bulk_write import insert_rows
from recruit.db import describe, unavailable
from recruit.errors import RecruitError
from recruit.migrate import current_revision, head_revision, upgrade
from recruit.models import Base
from recruit.tables import BATCH as LETTER_BATCH
from recruit.tables import DECISION, INVITATION, REVIEW_SHEET, STUDY_NUMBER, WORK_FOLDER

BATCH = 100_000
Progress = Callable[[str, int], None]

# Bookkeeping of the database's own machine (folders its commands are writing): never copied.
LOCAL_TABLES = frozenset({WORK_FOLDER.name})

# What a replace would lose, in the words of the refusal, in the order they are named.
HISTORY_KINDS = {
    "letters": "letters written",
    "replies": "replies",
    "letter_changes": "changes to letters already written (posted, status)",
    "decisions": "GP decisions",
    "sheets": "review sheets exported",
    "batches": "letter batches",
    "study_numbers": "study numbers given",
}
_ONE = {
    "letters": "letter written",
    "replies": "reply",
    "letter_changes": "change to a letter already written (posted, status)",
    "decisions": "GP decision",
    "sheets": "review sheet exported",
    "batches": "letter batch",
    "study_numbers": "study number given",
}


class HistoryWouldBeLost(RecruitError):
    """A copy with replace would delete decisions, letters or replies the source does not hold."""

    def __init__(self, message: str, lost: dict[str, int]) -> None:
        super().__init__(message)
        self.lost = lost


@dataclass
class CopySummary:
    rows: dict[str, int] = field(default_factory=dict)
    # History of the target that the source lacked, deleted because delete_history was given.
    history_deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_database(
    source: Engine,
    target: Engine,
    *,
    replace: bool = False,
    delete_history: bool = False,
    progress: Progress | None = None,
) -> CopySummary:
    """Copy every recruit table from source to target (created or brought up to date first).

    The target must hold no records unless replace is true, in which case they are deleted
    first (in the same transaction as the copy); history of the target that the source does not
    hold row for row is deleted only with delete_history, else HistoryWouldBeLost is raised
    before anything changes."""
    if source.url == target.url:
        raise RecruitError("The database to copy into is the one being copied from: give another --to.")
    head = head_revision()
    found = current_revision(source)
    if found is None:
        raise RecruitError(f"The database {describe(source.url)} has no recruit tables to copy.")
    if found != head:
        raise RecruitError(
            f"The database {describe(source.url)} is at revision {found}; this recruit expects {head}. "
            "Run `recruit db upgrade` on it first."
        )
    upgrade(target)
    tables = [t for t in Base.metadata.sorted_tables if t.name not in LOCAL_TABLES]
    summary = CopySummary()
    try:
        with source.connect() as src, target.begin() as dst:
            if _holding(dst, tables, target, replace):
                lost = history_missing(dst, src)
                if any(lost.values()) and not delete_history:
                    raise HistoryWouldBeLost(
                        _lost_message(source, target, lost, history_missing(src, dst)), lost
                    )
                summary.history_deleted = {k: n for k, n in lost.items() if n}
                for table in reversed(tables):
                    dst.execute(delete(table))
            dropped = _drop_plain_indexes(dst, tables)
            for table in tables:
                summary.rows[table.name] = _copy_table(src, dst, table, progress)
            _reset_id_sequences(dst, tables)
            for index in dropped:
                dst.execute(CreateIndex(index))
        _analyse(target)
    except SQLAlchemyError as exc:
        raise unavailable(target, exc) from None
    return summary


def _holding(conn: Connection, tables: Sequence[Table], target: Engine, replace: bool) -> bool:
    """Whether the target holds rows (refused unless replace)."""
    holding = [t.name for t in tables if conn.execute(select(func.count()).select_from(t)).scalar()]
    if not holding:
        return False
    if not replace:
        raise RecruitError(
            f"The database {describe(target.url)} already holds records ({', '.join(holding[:4])}"
            f"{'...' if len(holding) > 4 else ''}). "
            "Give --replace to overwrite them, or copy into a new file."
        )
    return True


def _plain(value: object) -> object:
    """A value as compared between engines: times in UTC without their zone (SQLite drops it)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _digest(values: Sequence[object]) -> bytes:
    return hashlib.blake2b(repr(tuple(_plain(v) for v in values)).encode(), digest_size=16).digest()


def _row_digests(conn: Connection, table: Table) -> Iterator[tuple[bytes, Row[Any]]]:
    """(digest of every column as stored, row) for each row, streamed."""
    # Options on the statement: Connection.execution_options() would change the connection
    # itself, and later DELETEs would be sent through a server-side cursor.
    result = conn.execute(select(*_raw_columns(table)).execution_options(yield_per=BATCH))
    for row in result:
        yield _digest(row), row


def history_missing(holder: Connection, other: Connection) -> dict[str, int]:
    """How many history rows of `holder`, per kind, `other` does not hold identically (every
    column). Only digests of `other`'s rows are kept in memory (16 bytes a row)."""
    lost = dict.fromkeys(HISTORY_KINDS, 0)
    for kind, table in (
        ("decisions", DECISION),
        ("sheets", REVIEW_SHEET),
        ("batches", LETTER_BATCH),
        ("study_numbers", STUDY_NUMBER),
    ):
        known = {d for d, _ in _row_digests(other, table)}
        lost[kind] = sum(1 for d, _ in _row_digests(holder, table) if d not in known)
    # Invitations: a letter the other lacks altogether, or a reply (or posting) it lacks.
    letter = (INVITATION.c.study_id, INVITATION.c.nhs_number, INVITATION.c.study_number)
    known = set()
    letters = set()
    for d, row in _row_digests(other, INVITATION):
        known.add(d)
        letters.add(_digest([getattr(row, c.name) for c in letter]))
    for d, row in _row_digests(holder, INVITATION):
        if d in known:
            continue
        if _digest([getattr(row, c.name) for c in letter]) not in letters:
            lost["letters"] += 1
            lost["replies"] += row.reply is not None
        elif row.reply is not None:
            lost["replies"] += 1
        else:
            lost["letter_changes"] += 1
    return lost


def _counted(lost: dict[str, int]) -> str:
    parts = [
        f"{lost[k]:,} {_ONE[k] if lost[k] == 1 else words}"
        for k, words in HISTORY_KINDS.items()
        if lost.get(k)
    ]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _kind(engine: Engine) -> str:
    return {"sqlite": "SQLite file", "duckdb": "DuckDB file", "postgresql": "PostgreSQL database"}.get(
        engine.dialect.name, "database"
    )


def _address(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _lost_message(source: Engine, target: Engine, lost: dict[str, int], back: dict[str, int]) -> str:
    """Why the copy was refused and what to do, in words for practice staff."""
    there, here = describe(target.url), describe(source.url)
    said = (
        f"The {_kind(target)} {there} holds {_counted(lost)} that {here} does not have. "
        "Copying with --replace would delete them, and the next search there would write to "
        "those people again. Nothing was changed. "
    )
    if not any(back.values()):
        return said + (
            f"Copy {there} back first (it holds everything {here} holds): "
            f"recruit db copy --db {_address(target)} --to {_address(source)} --replace; "
            f"then load the new extracts into {here} and copy again. "
            "Only if those records are truly not wanted, give --delete-history."
        )
    return said + (
        f"{here} also holds {_counted(back)} that {there} does not have, so copying either way "
        "would lose some. Keep both databases as they are and ask whoever looks after recruit "
        "to bring the two together; give --delete-history only if the records named are truly "
        "not wanted."
    )


def _drop_plain_indexes(conn: Connection, tables: Sequence[Table]) -> list[Index]:
    """The models' plain indexes that exist in the target, dropped until the rows are in."""
    if conn.dialect.name == "duckdb":
        return []  # recruit makes no plain indexes on DuckDB (see recruit.duckdb_support)
    existing = {
        (t.name, ix["name"]) for t in tables for ix in inspect(conn).get_indexes(t.name) if ix.get("name")
    }
    dropped = []
    for table in tables:
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            if not index.unique and (table.name, index.name) in existing:
                conn.execute(DropIndex(index))
                dropped.append(index)
    return dropped


def _raw_columns(table: Table) -> list[ColumnElement[Any]]:
    """Columns as stored: JSON kept as its text, so it is copied byte for byte."""
    return [
        type_coerce(c, c.type.impl).label(c.name) if isinstance(c.type, TypeDecorator) else c
        for c in table.columns
    ]


def _batches(src: Connection, table: Table) -> Iterator[Sequence[Sequence[object]]]:
    order = list(table.primary_key.columns)
    query = select(*_raw_columns(table)).order_by(*order)
    result = src.execution_options(yield_per=BATCH).execute(query)
    yield from result.partitions()


def _as_utc(value: object) -> object:
    """recruit writes times in UTC; SQLite gives them back without their zone, so put it back."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _copy_table(src: Connection, dst: Connection, table: Table, progress: Progress | None) -> int:
    names = [c.name for c in table.columns]
    zoned = [i for i, c in enumerate(table.columns) if isinstance(c.type, DateTime) and c.type.timezone]
    n = 0
    for rows in _batches(src, table):
        if zoned:
            rows = [tuple(_as_utc(v) if i in zoned else v for i, v in enumerate(row)) for row in rows]
        insert_rows(dst, table, names, rows, typed=True)
        n += len(rows)
        if progress is not None:
            progress(table.name, len(rows))
    return n


def _numbered(table: Table) -> Column[int] | None:
    column = table.autoincrement_column
    return column if column is not None and isinstance(column.type, Integer) else None


def _reset_id_sequences(conn: Connection, tables: Sequence[Table]) -> None:
    """Ids copied as they were: the target's own numbering must carry on after the largest."""
    dialect = conn.dialect.name
    for table in tables:
        column = _numbered(table)
        if column is None:
            continue
        top = conn.execute(select(func.max(column))).scalar()
        if top is None:
            continue
        if dialect == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:t, :c), :v)"),
                {"t": table.name, "c": column.name, "v": top},
            )
        elif dialect == "duckdb":
            # DuckDB sequences cannot be set: make the sequence again, starting after the top.
            seq = f"{table.name}_id_seq"
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" DROP DEFAULT')
            conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {seq}")
            conn.exec_driver_sql(f"CREATE SEQUENCE {seq} START WITH {int(top) + 1}")
            conn.exec_driver_sql(
                f"ALTER TABLE {table.name} ALTER COLUMN \"{column.name}\" SET DEFAULT nextval('{seq}')"
            )


def _analyse(engine: Engine) -> None:
    """Fresh planner statistics for the copied tables (PostgreSQL and SQLite plan from them);
    PostgreSQL also vacuums, which lets it answer from an index without visiting the table."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    elif engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
