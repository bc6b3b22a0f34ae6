"""The review sheet's "Check first" column shows records the rules did not count: an exclusion's
code outside its window, and a latest in-work record older than the work-status look-back."""

from __future__ import annotations

import datetime as dt

import pytest
from openpyxl import load_workbook

from recruit.review import HEADERS, candidate_rows, export_review
from tests.conftest import postgres_schema_url
from tests.integration.review.practice import D, code_of, load_and_search, practice
from tests.integration.review.sheets import rows_by_pid
from tests.search_helpers import fresh_engine


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def searched(request, tmp_path_factory):
    """practice() plus: 6 had lung cancer coded three years before the search (the rule counts
    the last 12 months), 7's only work record says in work, four years before (look-back 2 years)."""
    pop = practice()
    pop.add_event(6, D(2022, 3, 1), *code_of("cancer", "lung"))
    pop.add_event(7, D(2021, 4, 1), *code_of("employment_status", "employed"))
    if request.param == "sqlite":
        engine = fresh_engine(f"sqlite:///{tmp_path_factory.mktemp('check') / 'recruit.db'}")
        yield engine, load_and_search(engine, pop)
        engine.dispose()
    else:
        with postgres_schema_url("cf") as url:
            engine = fresh_engine(url)
            yield engine, load_and_search(engine, pop)
            engine.dispose()


def test_ignored_and_conflicting_codes_are_flagged(searched, tmp_path):
    engine, run_id = searched
    rows = {r.patient_id: r for r in candidate_rows(engine, run_id, today=dt.date(2025, 7, 1))}
    assert {6, 7} <= set(rows)  # neither was excluded: the records are outside the windows
    cancer = rows[6].check_first
    assert "Not counted by the search" in cancer and "Cancer diagnosed recently" in cancer
    assert "1 Mar 2022" in cancer
    work = rows[7].check_first
    assert "says in work but is older than the search's 24-month look-back" in work
    assert "1 Apr 2021" in work
    # Someone with nothing ignored has nothing to check.
    assert rows[8].check_first == ""
    # And the workbook carries it.
    path = tmp_path / "review.xlsx"
    export_review(engine, run_id, path, today=dt.date(2025, 7, 1))
    ws = load_workbook(path)["Review"]
    row = rows_by_pid(ws)
    assert "1 Mar 2022" in ws.cell(row[6], HEADERS["Check first"]).value
    assert ws.cell(row[8], HEADERS["Check first"]).value is None
