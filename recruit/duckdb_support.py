"""DuckDB as a recruit database: the Alembic migrations, translated where DuckDB differs.

DuckDB (through duckdb-engine) is the embedded analytic engine for region-wide searches. Its
schema comes from the same migrations as SQLite's and PostgreSQL's, so a DuckDB file can never
drift from the models. Alembic has no DuckDB support, so this module teaches it three
translations, applied only on DuckDB:

- Auto-numbered ids: DuckDB has no SERIAL, so each such id gets a sequence
  (`<table>_id_seq`) and `DEFAULT nextval(...)`.
- Foreign keys are left out: DuckDB cannot cascade deletes, and checking every reference slows
  bulk copies; the rows come from recruit's own loader or from a database that checked them.
- Plain (non-unique) indexes are left out: DuckDB scans columns and joins by hashing; its
  indexes serve only point look-ups and make loading slower and bigger. Unique constraints,
  primary keys and CHECK constraints are kept.

Importing this module registers the translations; recruit.migrate imports it.
"""

from __future__ import annotations

from typing import Any

from alembic.ddl.impl import DefaultImpl
from sqlalchemy import BigInteger, Constraint, ForeignKeyConstraint, Index, Integer, Table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import Column, CreateColumn, CreateSequence, DropSequence, Sequence
from sqlalchemy.sql.compiler import DDLCompiler

DIALECT = "duckdb"


def _sequence_name(table_name: str) -> str:
    return f"{table_name}_id_seq"


def _numbered_column(table: Table) -> Column[Any] | None:
    """The integer primary key the database numbers itself (SERIAL elsewhere), if any."""
    column = table.autoincrement_column
    if column is None or column.server_default is not None or column.identity is not None:
        return None
    if not isinstance(column.type, Integer):
        return None
    return column


@compiles(CreateColumn, DIALECT)
def _create_column(element: CreateColumn, compiler: DDLCompiler, **kw: Any) -> str:
    column = element.element
    table = column.table
    if isinstance(table, Table) and _numbered_column(table) is column:
        kind = "BIGINT" if isinstance(column.type, BigInteger) else "INTEGER"
        name = compiler.preparer.format_column(column)
        if "TEMPORARY" in (p.upper() for p in table._prefixes):
            # Working tables of a load or a search: their code supplies every id.
            return f"{name} {kind} NOT NULL"
        return f"{name} {kind} DEFAULT nextval('{_sequence_name(table.name)}') NOT NULL"
    return compiler.visit_create_column(element, **kw)


class DuckDBImpl(DefaultImpl):
    """Alembic's operations on DuckDB (registered by name through Alembic's impl registry)."""

    __dialect__ = DIALECT
    transactional_ddl = True

    def create_table(self, table: Table, **kw: Any) -> None:
        if _numbered_column(table) is not None:
            self._exec(CreateSequence(Sequence(_sequence_name(table.name)), if_not_exists=True))
        kw["include_foreign_key_constraints"] = []
        # Indexes are created by DefaultImpl after the table: hide the plain ones meanwhile.
        plain = [ix for ix in table.indexes if not ix.unique]
        table.indexes.difference_update(plain)
        try:
            super().create_table(table, **kw)
        finally:
            table.indexes.update(plain)

    def drop_table(self, table: Table, **kw: Any) -> None:
        super().drop_table(table, **kw)
        if _numbered_column(table) is not None:
            self._exec(DropSequence(Sequence(_sequence_name(table.name)), if_exists=True))

    def create_index(self, index: Index, **kw: Any) -> None:
        if index.unique:
            super().create_index(index, **kw)

    def drop_index(self, index: Index, **kw: Any) -> None:
        if index.unique:
            super().drop_index(index, **kw)

    def add_constraint(self, const: Constraint, **kw: Any) -> None:
        if isinstance(const, ForeignKeyConstraint):
            return
        super().add_constraint(const, **kw)

    def drop_constraint(self, const: Constraint, **kw: Any) -> None:
        if isinstance(const, ForeignKeyConstraint):
            return
        super().drop_constraint(const, **kw)
