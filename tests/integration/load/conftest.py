"""Fixtures of the loading tests: an up-to-date database per test, on each engine."""

from __future__ import annotations

import pytest

from recruit.db import make_engine
from recruit.migrate import upgrade


def _engine(url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    upgrade(engine)
    return engine


@pytest.fixture
def engine(db_url):  # type: ignore[no-untyped-def]
    """A fresh database, once on SQLite and once on PostgreSQL."""
    engine = _engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url):  # type: ignore[no-untyped-def]
    """A fresh SQLite database, for tests whose point is not the engine."""
    engine = _engine(sqlite_url)
    yield engine
    engine.dispose()
