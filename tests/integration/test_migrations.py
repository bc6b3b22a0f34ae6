"""The migrations build exactly the schema the models describe, up and down, on every database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect

from recruit.db import make_engine
from recruit.migrate import current_revision, downgrade, head_revision, upgrade
from recruit.models import Base


def _diff(engine, metadata: MetaData) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def test_upgrade_builds_every_model_table_and_downgrade_removes_them(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables

    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) & set(Base.metadata.tables) == set()

    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_models_and_migrations_agree(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    assert _diff(engine, Base.metadata) == []
    engine.dispose()


def test_comparison_notices_a_model_change_without_a_migration(sqlite_url):
    """The agreement test above would fail if someone changed a model and forgot the migration."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    Table("new_table", changed, Column("id", Integer, primary_key=True))
    changed.tables["patient"].append_column(Column("nickname", String(50)))
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(engine, changed)}
    assert {"add_table", "add_column"} <= kinds
    engine.dispose()
