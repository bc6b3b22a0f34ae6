"""DuckDB as a recruit database, and `recruit db copy` between any two databases.

DuckDB's schema comes from the Alembic migrations (translated by recruit.duckdb_support), and a
copy must carry every row of every table unchanged, so that a search of the copy gives exactly
the run the original gives.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select, text

import synthetic_ehr
from recruit.db import make_engine
from recruit.dbcopy import copy_database
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.migrate import current_revision, downgrade, head_revision, upgrade
from recruit.models import Base, SearchResult, StepCount, Study
from recruit.query.run import run_search
from tests.helpers import run_cli
from tests.search_helpers import duckdb_available

pytestmark = pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine is not installed")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "instep.yaml"
INDEX = dt.date(2026, 11, 1)  # synthetic_ehr's extract date


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    out = tmp_path_factory.mktemp("extract")
    synthetic_ehr.generate(out, practices=2, patients=600, seed=7, formats=("ndjson",), workers=1)
    return out / "fhir"


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'region.duckdb'}"


def _utc(value):
    """SQLite gives times back without their zone (recruit writes UTC); others with it."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _rows(engine, table):
    """Every row of a table, in key order (JSON compared as parsed values, times in UTC)."""
    with engine.connect() as conn:
        order = list(table.primary_key.columns)
        return [tuple(_utc(v) for v in r) for r in conn.execute(select(table).order_by(*order))]


def _run(engine, run_id):
    with engine.connect() as conn:
        results = {
            r.patient_id: (r.outcome, r.excluding_step, r.reason, r.evidence, r.step_mask, r.score, r.rank)
            for r in conn.execute(select(SearchResult).where(SearchResult.run_id == run_id))
        }
        counts = [
            (c.step_id, c.entering, c.kept, c.excluded, c.failing_alone)
            for c in conn.execute(
                select(StepCount).where(StepCount.run_id == run_id).order_by(StepCount.step_index)
            )
        ]
    return results, counts


def test_migrations_run_on_duckdb_up_and_down(duckdb_url):
    engine = make_engine(duckdb_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        # Ids are numbered by the database, as SERIAL does elsewhere.
        first = conn.execute(insert(Study).values(code="a", title="A").returning(Study.id)).scalar_one()
        second = conn.execute(insert(Study).values(code="b", title="B").returning(Study.id)).scalar_one()
        assert second == first + 1
        # Unique and CHECK constraints are kept.
        with pytest.raises(Exception, match="(?i)constraint|duplicate"):
            conn.execute(insert(Study).values(code="a", title="again"))
    with pytest.raises(Exception, match="(?i)constraint"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO search_run (rule_set_name, rule_set_version, rule_set_fingerprint, "
                "index_date, started_at, status) VALUES ('x', '1', 'f', DATE '2026-01-01', "
                "now(), 'unheard-of')"
            )
        )
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) & set(Base.metadata.tables) == set()
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_a_copy_into_duckdb_holds_every_row_and_searches_the_same(db_url, duckdb_url, extract):
    source = make_engine(db_url)
    upgrade(source)
    load_extract(source, [extract])
    before = run_search(source, RULES, INDEX)
    target = make_engine(duckdb_url)

    summary = copy_database(source, target)

    assert summary.rows["patient"] == 600 and summary.rows["search_result"] == 600
    for table in Base.metadata.sorted_tables:
        assert _rows(target, table) == _rows(source, table), table.name
    # The copy searches exactly as the original, and its own ids carry on after the copied ones.
    after = run_search(target, RULES, INDEX)
    assert after == before + 1
    assert _run(target, after) == _run(source, before)
    assert _run(target, after)[1][-1][2] > 0  # some candidates, so the comparison means something
    source.dispose()
    target.dispose()


def test_a_copy_out_of_duckdb_and_into_postgres_or_sqlite(db_url, duckdb_url, extract, tmp_path):
    """Any direction: SQLite -> DuckDB -> the other engine, with every row intact."""
    first = make_engine(f"sqlite:///{tmp_path / 'first.db'}")
    upgrade(first)
    load_extract(first, [extract])
    middle = make_engine(duckdb_url)
    copy_database(first, middle)
    last = make_engine(db_url)
    copy_database(middle, last)
    for table in Base.metadata.sorted_tables:
        assert _rows(last, table) == _rows(first, table), table.name
    # Plain indexes dropped for the copy are back.
    names = {ix["name"] for ix in inspect(last).get_indexes("clinical_event")}
    assert {ix.name for ix in Base.metadata.tables["clinical_event"].indexes} <= names
    run_id = run_search(last, RULES, INDEX)
    assert _run(last, run_id)[1]
    for engine in (first, middle, last):
        engine.dispose()


def test_a_copy_never_overwrites_records_unless_asked(duckdb_url, extract, tmp_path):
    source = make_engine(f"sqlite:///{tmp_path / 'source.db'}")
    upgrade(source)
    load_extract(source, [extract])
    target = make_engine(duckdb_url)
    copy_database(source, target)
    with pytest.raises(RecruitError, match="already holds records.*--replace"):
        copy_database(source, target)
    summary = copy_database(source, target, replace=True)
    assert _rows(target, Base.metadata.tables["patient"]) == _rows(source, Base.metadata.tables["patient"])
    assert summary.rows["patient"] == 600
    with pytest.raises(RecruitError, match="one being copied from"):
        copy_database(source, make_engine(f"sqlite:///{tmp_path / 'source.db'}"))
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(RecruitError, match="no recruit tables"):
        copy_database(empty, make_engine(f"duckdb:///{tmp_path / 'other.duckdb'}"))
    for engine in (source, target, empty):
        engine.dispose()


def test_cli_copy_then_search_duckdb(tmp_path, extract):
    source = f"sqlite:///{tmp_path / 'practices.db'}"
    region = f"duckdb:///{tmp_path / 'region.duckdb'}"
    assert run_cli("load", "--create", str(extract), "--db", source, cwd=ROOT).returncode == 0
    copied = run_cli("db", "copy", "--db", source, "--to", region, cwd=ROOT)
    assert copied.returncode == 0, copied.stderr
    assert "patient: 600" in copied.stdout
    status = run_cli("db", "status", "--db", region, cwd=ROOT)
    assert "DuckDB file" in status.stdout and "up to date" in status.stdout
    searched = run_cli("search", "--index-date", INDEX.isoformat(), "--db", region, cwd=ROOT)
    assert searched.returncode == 0, searched.stderr
    assert "likely_in_work" in searched.stdout and "Candidates:" in searched.stdout
    again = run_cli("db", "copy", "--db", source, "--to", region, cwd=ROOT)
    assert again.returncode == 1
    assert "Traceback" not in again.stderr and "--replace" in again.stderr
