"""Staging tables: rows land here first, then set-based SQL resolves references and moves them in.

Staging makes the load independent of record order (an observation may come before its patient)
and keeps memory flat: nothing per patient is held in Python. The tables are temporary, on the
load's own connection, inside its one transaction, so a failed or killed load leaves nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from recruit.bulk_write import BulkWriter

staging = MetaData()
# Record sequence numbers carry the chunk number in their high bits (recruit.load.chunks).
SEQ = BigInteger().with_variant(Integer, "sqlite")


def _temp(name: str, *cols: Any) -> Table:
    return Table(name, staging, *cols, prefixes=["TEMPORARY"])


ld_file = _temp("ld_file", Column("file_no", Integer, primary_key=True), Column("path", Text))

ld_patient = _temp(
    "ld_patient",
    Column("seq", SEQ, primary_key=True),
    Column("file_no", Integer),
    Column("line", Integer),
    Column("resource_id", String(200)),
    Column("source_id", String(200)),
    Column("nhs_number", String(10)),
    Column("title", String(40)),
    Column("given_name", String(100)),
    Column("family_name", String(100)),
    Column("date_of_birth", Date),
    Column("sex", String(8)),
    Column("address", Text),
    Column("postcode", String(10)),
    Column("practice_ref", String(250)),
    Column("gp_ref", String(250)),
    Column("registration_start", Date),
    Column("registration_end", Date),
    Column("date_of_death", Date),
    Column("needs_interpreter", Boolean),
    Column("language", String(40)),
    Column("date_of_birth_latest", Date),
    Column("registration_stated", Boolean),
    Column("practice_id", Integer),
    Column("usual_gp_id", Integer),
    Column("patient_id", Integer),
    Column("status", String(40)),  # NULL while unresolved, 'ok', 'same_person', or a quarantine reason
    # The self-contained Bundle it came in (recruit.load.scope; NULL: none), and, for a second
    # record of one person from another Bundle, the seq of the record it joins.
    Column("bundle", String(40)),
    Column("same_as", SEQ),
    Column("entry", Integer),  # its place in its Bundle, for the quarantine
    Index("ix_ld_patient_source", "source_id", "practice_id"),
    Index("ix_ld_patient_nhs", "nhs_number", "practice_id"),
)
ld_patient_key = _temp(
    "ld_patient_key",
    Column("key", String(250)),
    Column("seq", SEQ),
    Index("ix_ld_patient_key", "key"),
)


def _record_table(name: str, *cols: Any) -> Table:
    """An event or prescription table: where each record came from, whose it is, then its data."""
    return _temp(
        name,
        Column("seq", SEQ),
        Column("file_no", Integer),
        Column("line", Integer),
        Column("resource_type", String(40)),
        Column("resource_id", String(200)),
        Column("patient_ref", String(250)),
        *cols,
        Column("bundle", String(40)),  # the self-contained Bundle it came in (ids are unique within it)
        Column("entry", Integer),  # its place in its Bundle, for the quarantine
        Index(f"ix_{name}_seq", "seq"),
        Index(f"ix_{name}_resource", "resource_type", "resource_id"),
    )


ld_event = _record_table(
    "ld_event",
    Column("event_date", Date),
    Column("code_system", String(10)),
    Column("code", String(20)),
    Column("term", String(255)),
    Column("value", Float),
    Column("unit", String(40)),
    Column("status", String(16)),
)
ld_med = _record_table(
    "ld_med",
    Column("issue_date", Date),
    Column("code_system", String(10)),
    Column("code", String(20)),
    Column("term", String(255)),
    Column("quantity", Float),
    Column("course", String(8)),
    Column("medication_ref", String(250)),
    Column("status", String(16)),
)
# Keys of Patient records quarantined while reading, so their records can say so.
ld_bad_patient_key = _temp(
    "ld_bad_patient_key",
    Column("key", String(250)),
    Column("seq", SEQ),
    Index("ix_ld_bad_patient_key", "key"),
)
# Quarantined records that still signal death, leaving or a coded entry (recruit.load.rows.HoldRow).
ld_hold = _temp(
    "ld_hold",
    Column("seq", SEQ),
    Column("file_no", Integer),
    Column("line", Integer),
    Column("resource_type", String(40)),
    Column("reason_code", String(64)),
    Column("patient_ref", String(250)),
    Column("nhs_number", String(10)),
    Column("source_id", String(200)),
    Column("signal", String(8)),
    Column("code_system", String(10)),
    Column("code", String(20)),
)
# Medication resources by key; code NULL: one coded only in systems recruit does not read. A key
# may repeat (the same id twice in an extract): never a reason for the load to fail.
ld_medicine = _temp(
    "ld_medicine",
    Column("key", String(250)),
    Column("code_system", String(10)),
    Column("code", String(20)),
    Column("term", String(255)),
    Index("ix_ld_medicine_key", "key"),
)
# Per record (seq) of events and prescriptions: where it came from, which patient it resolved to,
# and 'ok' or the reason it is quarantined.
ld_record = _temp(
    "ld_record",
    Column("seq", SEQ, primary_key=True),
    Column("kind", String(8)),  # event or med
    Column("file_no", Integer),
    Column("line", Integer),
    Column("resource_type", String(40)),
    Column("resource_id", String(200)),
    Column("patient_seq", SEQ),
    Column("entry", Integer),
    Column("status", String(40)),
)
# Registration episodes (EpisodeOfCare), matched to patients through ld_patient_key; status is
# NULL while unresolved, 'ok' when applied, else why the episode is not used.
ld_episode = _temp(
    "ld_episode",
    Column("seq", SEQ, primary_key=True),
    Column("file_no", Integer),
    Column("line", Integer),
    Column("resource_id", String(200)),
    Column("patient_ref", String(250)),
    Column("practice_ref", String(250)),
    Column("registration", Boolean),
    Column("period_start", Date),
    Column("period_end", Date),
    Column("patient_seq", SEQ),
    Column("status", String(40)),
    Index("ix_ld_episode_patient", "patient_seq"),
)
# Every Organization key of the extract, with its practice when the extract holds that practice.
ld_org_key = _temp(
    "ld_org_key",
    Column("key", String(250), primary_key=True),
    Column("practice_id", Integer),
)
ld_ref = _temp(
    "ld_ref",
    Column("key", String(250), primary_key=True),
    Column("target_id", Integer),
)
ld_gp = _temp(
    "ld_gp",
    Column("practice_id", Integer, primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("practitioner_id", Integer),
)


def create_staging(conn: Connection) -> None:
    """The staging tables, without their indexes: rows go in faster, indexes come after."""
    staging.drop_all(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        # Temporary tables live in their own file with a small page cache; a larger one saves
        # most of the spilling while staying a fixed size.
        conn.exec_driver_sql("PRAGMA temp.cache_size = -65536")
    for table in staging.sorted_tables:
        table.create(conn)
        for index in table.indexes:
            index.drop(conn)


def index_staging(conn: Connection) -> None:
    """Build the staging indexes once every row is in (cheaper than maintaining them per row)."""
    for table in staging.sorted_tables:
        for index in table.indexes:
            index.create(conn)
    analyse(conn, *staging.sorted_tables)


def analyse(conn: Connection, *tables: Table) -> None:
    """Refresh PostgreSQL's statistics of tables just filled or rewritten.

    Autovacuum never analyses temporary tables, nor anything inside an open transaction: without
    statistics (or with ones from before an UPDATE) the planner guesses a handful of rows and
    joins hundreds of thousands by nested loops. SQLite plans well enough from its indexes."""
    if conn.dialect.name == "postgresql":
        for table in tables:
            conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")


def drop_staging(conn: Connection) -> None:
    staging.drop_all(conn, checkfirst=True)


def staging_writer(conn: Connection) -> BulkWriter:
    """The load's writer for every staging table: rows are plain tuples (dates already ISO text),
    buffered and written in batches by the engine's bulk path (recruit.bulk_write)."""
    return BulkWriter(conn, staging.tables.values(), batch=5000)
