"""The spec tests' database: one empty recruit schema on each engine the search runs on."""

from __future__ import annotations

import pytest

from tests.search_helpers import duckdb_available, fresh_engine


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param(
            "duckdb", marks=pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine not installed")
        ),
    ]
)
def engine(request, tmp_path):
    """SQLite, PostgreSQL and DuckDB: the search and evaluate use the same portable queries."""
    if request.param == "duckdb":
        engine = fresh_engine(f"duckdb:///{tmp_path / 'spec.duckdb'}")
    else:
        engine = fresh_engine(
            request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
        )
    yield engine
    engine.dispose()
