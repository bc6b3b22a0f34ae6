"""The InSTEP rule file: it loads with the real codelists, and a run over a few made-up
patients puts each of them where the rules say, with the flow table stored and printable."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from recruit.cli_render import format_flow
from recruit.errors import RecruitError
from recruit.models import SearchResult, SearchRun
from recruit.query.flow import run_flow
from recruit.query.run import load_search, run_search
from recruit.rules.model import RuleSetError
from tests.search_helpers import Population, clear, fresh_engine, load_population

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "instep.yaml"
INDEX = dt.date(2025, 6, 30)
D = dt.date


@pytest.fixture(scope="module")
def instep():
    return load_search(RULES)


def code_of(codelists, name, category=None):
    """One real code from a codelist (optionally of a category): (system, code, term)."""
    row = next(c for c in codelists[name].codes if category is None or c.category == category)
    return str(row.system), row.code, row.term


def test_instep_rules_load_with_their_codelists(instep):
    rule_set, codelists, text = instep
    assert rule_set.study == "instep"
    assert [s.id for s in rule_set.steps][:5] == [
        "registered",
        "alive",
        "nhs_number",
        "working_age",
        "chronic_pain",
    ]
    assert {"chronic_pain", "opioids", "employment_status", "fit_note", "cancer", "dementia"} <= set(
        codelists
    )
    assert text.startswith("# yaml-language-server: $schema=rule-set.schema.json")
    assert all(c.why for c in rule_set.score)


def test_a_misspelt_category_is_reported_at_its_line(tmp_path):
    broken = RULES.read_text().replace(
        "categories: [not_fit_for_work], status: out_of_work", "categories: [not_fit], status: out_of_work"
    )
    path = tmp_path / "instep.yaml"
    path.write_text(
        broken.replace("version:", f"codelist_directory: {ROOT / 'rules' / 'codelists'}\nversion:", 1)
    )
    with pytest.raises(RuleSetError) as info:
        load_search(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "[not_fit]" in text)
    assert (
        f"{path}:{line}: definitions.work_status_in_24_months.latest_code_among.sources[0].categories[0]: "
        in str(info.value)
    )
    assert "no row of fit_note has category 'not_fit'" in str(info.value)


def test_instep_search_on_made_up_patients(db_url, instep):
    _, codelists, _ = instep
    engine = fresh_engine(db_url)
    pain = code_of(codelists, "chronic_pain")
    opioid = code_of(codelists, "opioids")
    employed = code_of(codelists, "employment_status", "employed")
    unemployed = code_of(codelists, "employment_status", "unemployed")
    not_fit = code_of(codelists, "fit_note", "not_fit_for_work")
    dementia = code_of(codelists, "dementia")
    lung = code_of(codelists, "cancer", "lung")

    pop = Population()
    pop.practices.append({"id": 1, "ods_code": "A81001", "name": "Test"})
    for pid in range(1, 10):
        pop.add_patient(pid, date_of_birth=D(1980, 5, 5), nhs_number=f"94000000{pid:02d}")
        pop.add_event(pid, D(2024, 1, 10), *pain)
    pop.patients[1]["date_of_birth"] = D(1950, 1, 1)  # 2: too old
    pop.events = [e for e in pop.events if e["patient_id"] != 3]  # 3: no pain code, but repeat opioids
    for day in (D(2025, 2, 1), D(2025, 3, 1), D(2025, 4, 1)):
        pop.add_issue(3, day, opioid[1], system=opioid[0])
    pop.add_event(4, D(2025, 1, 1), *employed[:2], employed[2])  # 4: in work
    pop.add_event(5, D(2024, 1, 1), *employed[:2], employed[2])  # 5: in work, then unemployed
    pop.add_event(5, D(2025, 1, 1), *unemployed[:2], unemployed[2])
    pop.add_event(6, D(2025, 5, 1), *not_fit[:2], not_fit[2])  # 6: off sick now
    pop.add_event(7, D(2020, 1, 1), *dementia[:2], dementia[2])  # 7: dementia
    pop.add_event(8, D(2025, 1, 1), *lung[:2], lung[2])  # 8: recent lung cancer
    pop.studies.append({"id": 1, "code": "instep", "title": "InSTEP"})
    pop.add_invitation(9, "instep", status="sent")  # 9: already invited
    with engine.begin() as conn:
        clear(conn)
        load_population(conn, pop)

    run_id = run_search(engine, RULES, INDEX, practice="A81001")
    with engine.connect() as conn:
        run = conn.execute(select(SearchRun.__table__).where(SearchRun.id == run_id)).one()
        results = {
            r.patient_id: r
            for r in conn.execute(select(SearchResult.__table__).where(SearchResult.run_id == run_id))
        }
        flow = run_flow(conn, run_id)
        table = format_flow(run, flow)
    assert run.status == "finished" and run.rule_set_name == "instep" and run.index_date == INDEX
    assert set(run.codelist_fingerprints) >= {"chronic_pain", "opioids"}
    assert {pid: r.excluding_step for pid, r in results.items()} == {
        1: None,
        2: "working_age",
        3: None,
        4: "likely_in_work",
        5: None,
        6: None,
        7: "dementia",
        8: "active_cancer",
        9: "already_invited",
    }
    assert results[4].evidence["code"] == employed[1]
    assert employed[2] in results[4].reason
    # Ranked by out-of-work evidence: 5 (an unemployed status code this year: 3 + 1 for the last 2
    # years + 2 for the latest code of any age), then 6 (a recent not-fit note: weak, most notes go
    # to people with a job), then 3 (no evidence, but repeat opioids: 0.5 + 0.25), then 1 (none).
    ranks = {pid: r.rank for pid, r in results.items() if r.outcome == "candidate"}
    assert ranks == {5: 1, 6: 2, 3: 3, 1: 4}
    assert [results[pid].score for pid in (5, 6, 3, 1)] == [6.0, 1.0, 0.75, 0.5]
    assert [f.kept for f in flow][-1] == 4
    assert "likely_in_work" in table and "Candidates: 4" in table
    with pytest.raises(RecruitError, match="No practice with ODS code Z99999"):
        run_search(engine, RULES, INDEX, practice="Z99999")
    engine.dispose()
