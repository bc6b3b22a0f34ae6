"""A small made-up practice searched with the real InSTEP rules, for the review and replies tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, insert, select

from recruit.models import Invitation, SearchResult, Study
from recruit.query.run import load_search, run_rule_set
from tests.search_helpers import Population, clear, load_population

ROOT = Path(__file__).resolve().parents[3]
# The InSTEP rules as of version 0.1, whose wave score these tests' expected row order was worked
# out for (0.2 weighs an unemployed code above a not-fit note, which reorders the sheet's rows).
RULES = Path(__file__).with_name("instep-0.1.yaml")
INDEX = dt.date(2025, 6, 30)
D = dt.date

_loaded = load_search(RULES)  # once: reading the real codelists takes seconds


def code_of(name: str, category: str | None = None) -> tuple[str, str, str]:
    """One real code from a codelist (optionally of a category): (system, code, term)."""
    row = next(c for c in _loaded[1][name].codes if category is None or c.category == category)
    return str(row.system), row.code, row.term


def nhs(pid: int) -> str:
    return f"94000000{pid:02d}"


def practice(n: int = 8, names: dict[int, tuple[str, str]] | None = None) -> Population:
    """n patients with chronic pain; 2 has dementia (excluded), 3 is in work (excluded), 4 has a
    recent not-fit-for-work note (top of the list), 5 is unemployed; the rest have no work record."""
    names = names or {}
    pain = code_of("chronic_pain")
    pop = Population()
    pop.practices.append({"id": 1, "ods_code": "A81001", "name": "Riverside Surgery"})
    pop.studies.append({"id": 1, "code": "instep", "title": "InSTEP"})
    for pid in range(1, n + 1):
        given, family = names.get(pid, (f"Given{pid}", f"Family{pid}"))
        pop.add_patient(
            pid,
            date_of_birth=D(1980, 5, pid),
            nhs_number=nhs(pid),
            given_name=given,
            family_name=family,
            title="Ms",
            address=f"{pid} High Street\nLeeds",
            postcode="LS1 1AA",
        )
        pop.add_event(pid, D(2024, 1, 10), *pain)
    if n >= 2:
        pop.add_event(2, D(2020, 1, 1), *code_of("dementia"))
    if n >= 3:
        pop.add_event(3, D(2025, 1, 1), *code_of("employment_status", "employed"))
    if n >= 4:
        pop.add_event(4, D(2025, 5, 1), *code_of("fit_note", "not_fit_for_work"))
    if n >= 5:
        pop.add_event(5, D(2025, 1, 1), *code_of("employment_status", "unemployed"))
    return pop


def load_and_search(engine: Engine, pop: Population, index: dt.date = INDEX) -> int:
    with engine.begin() as conn:
        clear(conn)
        load_population(conn, pop)
    return search_again(engine, index)


def search_again(
    engine: Engine, index: dt.date = INDEX, study: str = "instep", practice: str | None = "A81001"
) -> int:
    """A search with the InSTEP rules (as `recruit search` runs them), for `study`; of one
    practice, or of every practice loaded (practice=None, as over a region)."""
    rule_set, codelists, text = _loaded
    if study != rule_set.study:
        rule_set = rule_set.model_copy(update={"study": study})
        text = text.replace("study: instep", f"study: {study}")
    return run_rule_set(engine, rule_set, codelists, index, practice, text)


SECOND = {"id": 2, "ods_code": "B82002", "name": "Hillside Practice"}


def region() -> Population:
    """practice() (A81001: candidates 1, 4, 5, 6, 7, 8) and a second practice, B82002, whose
    patients 11 to 14 all have chronic pain and no work record (all four are candidates)."""
    pain = code_of("chronic_pain")
    pop = practice()
    pop.practices.append(dict(SECOND))
    for pid in range(11, 15):
        pop.add_patient(
            pid,
            practice_id=2,
            date_of_birth=D(1975, 3, pid),
            nhs_number=nhs(pid),
            given_name=f"Given{pid}",
            family_name=f"Family{pid}",
            title="Mr",
            address=f"{pid} Hill Road\nYork",
            postcode="YO1 1AA",
        )
        pop.add_event(pid, D(2024, 2, 10), *pain)
    return pop


def candidates(engine: Engine, run_id: int) -> set[int]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(SearchResult.patient_id).where(
                    SearchResult.run_id == run_id, SearchResult.outcome == "candidate"
                )
            ).scalars()
        )


def outcomes(engine: Engine, run_id: int) -> dict[int, str | None]:
    """patient -> the step that excluded them (None for candidates)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SearchResult.patient_id, SearchResult.excluding_step).where(SearchResult.run_id == run_id)
        )
        return {pid: step for pid, step in rows}


def invite(
    engine: Engine,
    pid: int,
    study_number: str,
    *,
    run_id: int | None = None,
    created: dt.datetime = dt.datetime(2025, 7, 1, 9, 0, tzinfo=dt.UTC),
    status: str = "sent",
) -> None:
    """An invitation row as the letters step would make it."""
    with engine.begin() as conn:
        study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar_one()
        conn.execute(
            insert(Invitation.__table__).values(
                study_id=study_id,
                patient_id=pid,
                nhs_number=nhs(pid),
                run_id=run_id,
                study_number=study_number,
                status=status,
                created_at=created,
            )
        )
