"""Fixtures of the letters tests: one database per test module on each engine, which the tests
clear and fill themselves (migrating a fresh database per example would dominate their time)."""

from __future__ import annotations

import pytest

from tests.conftest import postgres_schema_url
from tests.search_helpers import fresh_engine


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):  # type: ignore[no-untyped-def]
    engine = fresh_engine(f"sqlite:///{tmp_path_factory.mktemp('letters') / 'letters.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine():  # type: ignore[no-untyped-def]
    with postgres_schema_url("l") as url:
        engine = fresh_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request):  # type: ignore[no-untyped-def]
    """The module's database on SQLite, then on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_engine")
