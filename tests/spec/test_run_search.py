"""run_search from files: a rule file beside its codelists folder, as a study would ship them."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from recruit.cli_render import format_flow
from recruit.errors import RecruitError
from recruit.models import Codelist, CodelistCode, SearchResult, SearchRun
from recruit.query.flow import flow_for_order, mask_histogram, practice_histograms, run_flow
from recruit.query.run import run_search
from tests.search_helpers import Population, clear, fresh_engine, load_population

MANIFEST = """\
codelists:
  - name: pain
    file: pain.csv
    version: "2025-01"
    sources: [made up for this test]
    match: prefix
  - name: status
    file: status.csv
    version: "1"
    sources: [made up]
"""
PAIN = """\
code,system,term,source
N24..,readv2,Other soft tissue disorders,test
1000001,snomedct,Chronic pain,test
"""
STATUS = "code,system,term,category,source\n3000001,snomedct,Employed,employed,test\n"
RULES = """\
name: files
version: "2"
steps:
  - id: pain
    kind: include
    reason: Pain coded
    criterion: {has_code: {codelist: pain}}
  - id: working
    kind: exclude
    reason: In work
    criterion:
      likely_in_work:
        evidence: [{codelist: status, categories: [employed], status: in_work}]
"""


def test_run_search_from_files(db_url, tmp_path):
    folder = tmp_path / "codelists"
    folder.mkdir()
    (folder / "codelists.yaml").write_text(MANIFEST)
    (folder / "pain.csv").write_text(PAIN)
    (folder / "status.csv").write_text(STATUS)
    rules = tmp_path / "search.yaml"
    rules.write_text(RULES)

    pop = Population()
    for pid in range(1, 5):
        pop.add_patient(pid)
    pop.add_event(1, dt.date(2024, 1, 1), "readv2", "N2411")  # under N24.., matched by prefix
    pop.add_event(2, dt.date(2024, 1, 1), "ctv3", "N2411")  # prefix matching is for Read v2 only
    pop.add_event(3, dt.date(2024, 1, 1), "snomedct", "1000001")
    pop.add_event(3, dt.date(2025, 1, 1), "snomedct", "3000001")
    engine = fresh_engine(db_url)
    with engine.begin() as conn:
        clear(conn)
        load_population(conn, pop)

    first = run_search(engine, rules, dt.date(2025, 6, 30))
    second = run_search(engine, rules, dt.date(2025, 6, 30), practice="A00001")
    with engine.connect() as conn:
        outcomes = dict(
            conn.execute(
                select(SearchResult.patient_id, SearchResult.outcome).where(SearchResult.run_id == second)
            ).all()
        )
        stored = conn.execute(select(func.count()).select_from(Codelist)).scalar()
        prefix_rows = conn.execute(select(CodelistCode.code).where(CodelistCode.match_prefix.is_(True))).all()
        run = conn.execute(select(SearchRun.__table__).where(SearchRun.id == first)).one()
        text = format_flow(run, run_flow(conn, first))
        histogram = mask_histogram(conn, first)
        by_practice = practice_histograms(conn, first)
    assert outcomes == {1: "candidate", 2: "excluded", 3: "excluded", 4: "excluded"}
    assert stored == 2  # the second run reused the stored codelists (same fingerprints)
    assert prefix_rows == [("N24..",)]
    assert "Search run 1: files 2, index date 2025-06-30" in text
    assert "Candidates: 1" in text
    assert by_practice == {1: histogram}
    # The other order: exclusion first, then inclusion.
    assert flow_for_order(histogram, [1, 0]) == [
        {"step_index": 1, "entering": 4, "kept": 3, "excluded": 1},
        {"step_index": 0, "entering": 3, "kept": 1, "excluded": 2},
    ]
    engine.dispose()


def test_codelist_usage_finds_lists_that_never_match(db_url):
    from recruit.query.usage import codelist_usage
    from tests.search_helpers import make_codelist

    pop = Population()
    pop.add_patient(1)
    pop.add_patient(2)
    pop.add_event(1, dt.date(2024, 1, 1), "readv2", "N2411")
    pop.add_event(2, dt.date(2024, 1, 1), "readv2", "N2412")
    pop.add_event(2, dt.date(2024, 2, 1), "readv2", "N2412")
    pop.add_issue(1, dt.date(2024, 1, 1), "2000001")
    engine = fresh_engine(db_url)
    with engine.begin() as conn:
        clear(conn)
        load_population(conn, pop)
    lists = {
        "pain": make_codelist("pain", [("readv2", "N24..", "", "prefix"), ("readv2", "N2411")]),
        "drugs": make_codelist("drugs", [("dmd", "2000001"), ("dmd", "2000009")]),
        "wrong_system": make_codelist("wrong_system", [("ctv3", "N2411")]),
    }
    usage = {u.name: u for u in codelist_usage(engine, lists)}
    assert (usage["pain"].records, usage["pain"].patients, usage["pain"].codes_matched) == (3, 2, 2)
    assert (usage["drugs"].records, usage["drugs"].codes_matched, usage["drugs"].codes) == (1, 1, 2)
    assert usage["wrong_system"].never_matched
    engine.dispose()


def test_searching_a_database_with_nothing_loaded_says_so(db_url, tmp_path):
    """A mistyped --db names a new, empty database: no run is recorded, and the message says why."""
    rules = tmp_path / "search.yaml"
    (tmp_path / "codelists").mkdir()
    (tmp_path / "codelists" / "codelists.yaml").write_text(MANIFEST)
    (tmp_path / "codelists" / "pain.csv").write_text(PAIN)
    (tmp_path / "codelists" / "status.csv").write_text(STATUS)
    rules.write_text(RULES)
    engine = fresh_engine(db_url)
    with pytest.raises(RecruitError, match="No practice's records have been loaded"):
        run_search(engine, rules, dt.date(2025, 6, 30))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(SearchRun)).scalar() == 0
