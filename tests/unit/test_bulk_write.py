"""The one bulk writer: the same rows arrive whole on every engine, by each engine's own path."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Boolean, Column, Date, Integer, MetaData, String, Table, create_engine, select

from recruit.bulk_write import BulkWriter, insert_rows, write_rows


@pytest.fixture(params=["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bulk.db'}"
    elif request.param == "duckdb":
        url = f"duckdb:///{tmp_path / 'bulk.duckdb'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _table(name: str = "people") -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer),
        Column("name", String(20)),
        Column("born", Date),
        Column("flag", Boolean),
        prefixes=["TEMPORARY"],
    )


def test_write_rows_streams_every_row_in_batches(engine) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    rows = ((i, f"p{i}", f"2000-01-{1 + i % 28:02d}", i % 2 == 0) for i in range(2_503))
    with engine.begin() as conn:
        table.create(conn)
        assert write_rows(conn, table, rows, batch=1_000) == 2_503
        got = conn.execute(select(table).order_by(table.c.id)).all()
    assert len(got) == 2_503
    assert tuple(got[27]) == (27, "p27", dt.date(2000, 1, 28), False)
    assert tuple(got[28]) == (28, "p28", dt.date(2000, 1, 1), True)


def test_some_columns_and_none_values(engine) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    with engine.begin() as conn:
        table.create(conn)
        insert_rows(conn, table, ["id", "name"], [(1, None), (2, "b")])
        insert_rows(conn, table, ["id", "name"], [])
        got = conn.execute(select(table).order_by(table.c.id)).all()
    assert [tuple(r) for r in got] == [(1, None, None, None), (2, "b", None, None)]


def test_writer_buffers_per_table_until_flushed(engine) -> None:  # type: ignore[no-untyped-def]
    one, two = _table("one"), _table("two")
    with engine.begin() as conn:
        one.create(conn)
        two.create(conn)
        writer = BulkWriter(conn, [one, two], batch=3)
        for i in range(4):
            writer.add(one, (i, "x", dt.date(2001, 2, 3), True))
        writer.add_many("two", [(9, "y", "2001-02-03", False)])
        assert conn.execute(select(one.c.id)).all() and not conn.execute(select(two.c.id)).all()
        writer.flush()
        assert len(conn.execute(select(one.c.id)).all()) == 4
        assert conn.execute(select(two.c.born)).scalar() == dt.date(2001, 2, 3)
