"""One searched practice per database per test module; each test starts from it unchanged.

Searching with the real InSTEP codelists takes seconds, so the database is built once per module
(on SQLite, and on PostgreSQL when a server is configured, like the `db_url` fixture) and each
test gets it back with no review decisions, no invitations and the patients as first loaded.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from sqlalchemy import delete, update

from recruit.models import Invitation, Patient, ReviewDecision
from tests.conftest import postgres_schema_url
from tests.integration.review.practice import load_and_search, practice, search_again
from tests.search_helpers import fresh_engine


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def base(request, tmp_path_factory):
    """(engine, first run, second run) over practice(); run 2 exists for the mixed-runs cases."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('review') / 'recruit.db'}"
        else:
            url = stack.enter_context(postgres_schema_url("r"))
        engine = fresh_engine(url)
        stack.callback(engine.dispose)
        first = load_and_search(engine, practice())
        second = search_again(engine)
        yield engine, first, second


@pytest.fixture
def searched(base):
    """(engine, run id) with no decisions, no invitations and the patients as loaded."""
    engine, first, _ = base
    with engine.begin() as conn:
        conn.execute(delete(ReviewDecision.__table__))
        conn.execute(delete(Invitation.__table__))
        for row in practice().patients:
            values = {k: v for k, v in row.items() if k != "id"}
            defaults = dict(needs_large_print=False, needs_easy_read=False, needs_braille=False)
            conn.execute(
                update(Patient.__table__).where(Patient.id == row["id"]).values(**defaults, **values)
            )
    return engine, first
