"""Shared fixtures: one database of each kind we support, isolated per test.

PostgreSQL tests need RECRUIT_TEST_POSTGRES_URL; without it they are skipped with a reason, so
the suite passes on a machine with no server. CI sets RECRUIT_REQUIRE_POSTGRES=1, which turns any
such skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

PG_ENV = "RECRUIT_TEST_POSTGRES_URL"
REQUIRE_PG_ENV = "RECRUIT_REQUIRE_POSTGRES"
PG_SKIP_REASON = (
    "PostgreSQL tests need a server: set RECRUIT_TEST_POSTGRES_URL, "
    "e.g. postgresql+psycopg://root@127.0.0.1:5432/test"
)


def postgres_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP_REASON)
    return url


@contextmanager
def postgres_schema_url(prefix: str = "t") -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    base = postgres_base_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'recruit.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(REQUIRE_PG_ENV) and item.get_closest_marker("postgres"):
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped but {REQUIRE_PG_ENV} is set: {PG_SKIP_REASON}"


def pytest_unconfigure(config: pytest.Config) -> None:
    """duckdb's bindings (nanobind) print 'leaked function' noise to stderr at interpreter exit,
    after pytest's summary, burying the result line; once the tests are over, silence stderr."""
    import atexit
    import sys

    def _silence() -> None:
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)

    if "duckdb" in sys.modules:
        atexit.register(_silence)
