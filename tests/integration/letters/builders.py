"""Small hand-built worlds for the letters tests: a practice, its GPs, patients, a finished search
run with its results, and GP review decisions, written straight into the tables."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from recruit.letters.study import load_study_settings, store_study
from recruit.models import (
    ClinicalEvent,
    Invitation,
    Patient,
    Practice,
    Practitioner,
    ReviewDecision,
    SearchResult,
    SearchRun,
    Study,
)

ROOT = Path(__file__).resolve().parents[3]
STUDY_FILE = ROOT / "rules" / "studies" / "instep.yaml"
OPT_OUT = ("readv2", "9Nu0.")  # Dissent from secondary use of GP patient identifiable data
LARGE_PRINT_SNOMED = None  # looked up from the codelist when needed

TABLES = [
    "person_hold",
    "quarantine",
    "invitation",
    "study_number",
    "work_folder",
    "letter_batch",
    "review_decision",
    "review_sheet",
    "score_weights",
    "search_result",
    "step_count",
    "search_run",
    "clinical_event",
    "medication_issue",
    "patient",
    "practitioner",
    "practice",
    "extract",
    "codelist_code",
    "codelist",
    "study",
]


def clear(conn: Connection) -> None:
    for table in TABLES:
        conn.execute(text(f"DELETE FROM {table}"))


@dataclass
class Person:
    """One patient and everything about them that matters to the letters."""

    id: int
    given: str = "Ann"
    family: str = "Example"
    title: str | None = None
    address: str | None = "1 High Street\nSometown"
    postcode: str | None = "LS1 1AA"
    nhs: str | None = None
    outcome: str = "candidate"  # in the search run: candidate or excluded
    rank: int | None = None
    decision: str | None = "invite"  # invite, do_not_invite, or None (not reviewed)
    died: bool = False
    left: bool = False
    opt_out: bool = False
    do_not_contact_elsewhere: bool = False
    invited_before: bool = False
    large_print: bool = False
    easy_read: bool = False
    braille: bool = False
    interpreter: bool = False
    language: str | None = None
    usual_gp: int | None = 1
    pseudonymised: bool = False  # from a pseudonymised extract: no NHS number (never written to)

    @property
    def nhs_number(self) -> str | None:
        return None if self.pseudonymised else self.nhs or f"9{self.id:09d}"


@dataclass
class World:
    run_id: int
    people: dict[int, Person] = field(default_factory=dict)

    def allowed(self) -> set[int]:
        """Who may get a letter, worked out in plain Python from the people as built."""
        return {
            p.id
            for p in self.people.values()
            if p.outcome == "candidate"
            and p.decision == "invite"
            and not (p.died or p.left or p.opt_out or p.do_not_contact_elsewhere or p.invited_before)
            and not p.pseudonymised
            and (p.given or p.family)
            and p.address
            and p.postcode
        }


def build(engine: Engine, people: Iterable[Person], *, clear_first: bool = True) -> World:
    people = list(people)
    settings = load_study_settings(STUDY_FILE)
    with engine.begin() as conn:
        if clear_first:
            clear(conn)
        study_id = store_study(conn, settings)
        other = conn.execute(
            insert(Study.__table__).values(code="other", title="Another study").returning(Study.id)
        )
        other_id = other.scalar_one()
        conn.execute(
            insert(Practice.__table__).values(
                id=1,
                ods_code="A00001",
                name="Riverside Surgery",
                address="10 River Road\nSometown",
                postcode="LS2 2BB",
                telephone="0113 496 0000",
            )
        )
        conn.execute(
            insert(Practitioner.__table__),
            [
                {
                    "id": 1,
                    "practice_id": 1,
                    "source_id": "gp1",
                    "title": "Dr",
                    "given_name": "Ada",
                    "family_name": "Okafor",
                    "role": "GP",
                },
                {
                    "id": 2,
                    "practice_id": 1,
                    "source_id": "gp2",
                    "title": "Dr",
                    "given_name": "Ben",
                    "family_name": "Stone",
                    "role": "GP",
                },
            ],
        )
        run_id = conn.execute(
            insert(SearchRun.__table__)
            .values(
                study_id=study_id,
                rule_set_name="test",
                rule_set_version="1",
                rule_set_fingerprint="x",
                index_date=dt.date(2026, 1, 1),
                status="finished",
            )
            .returning(SearchRun.id)
        ).scalar_one()
        for p in people:
            conn.execute(
                insert(Patient.__table__).values(
                    id=p.id,
                    practice_id=1,
                    source_id=f"p{p.id}",
                    nhs_number=p.nhs_number,
                    title=p.title,
                    given_name=p.given,
                    family_name=p.family,
                    date_of_birth=dt.date(1980, 1, 1),
                    sex="unknown",
                    address=p.address,
                    postcode=p.postcode,
                    usual_gp_id=p.usual_gp,
                    registration_start=dt.date(2000, 1, 1),
                    registration_end=dt.date(2026, 2, 1) if p.left else None,
                    date_of_death=dt.date(2026, 2, 1) if p.died else None,
                    needs_large_print=p.large_print,
                    needs_easy_read=p.easy_read,
                    needs_braille=p.braille,
                    needs_interpreter=p.interpreter,
                    language=p.language,
                    pseudonymised=p.pseudonymised,
                )
            )
            conn.execute(
                insert(SearchResult.__table__).values(
                    run_id=run_id,
                    patient_id=p.id,
                    practice_id=1,
                    outcome=p.outcome,
                    step_mask=0,
                    rank=(p.rank if p.rank is not None else p.id) if p.outcome == "candidate" else None,
                )
            )
            if p.decision is not None:
                conn.execute(
                    insert(ReviewDecision.__table__).values(
                        run_id=run_id, patient_id=p.id, decision=p.decision, reviewer="Dr Okafor"
                    )
                )
            if p.opt_out:
                conn.execute(
                    insert(ClinicalEvent.__table__).values(
                        patient_id=p.id,
                        practice_id=1,
                        event_date=dt.date(2026, 2, 1),
                        code_system=OPT_OUT[0],
                        code=OPT_OUT[1],
                    )
                )
            for flag, study, reply in (
                (p.do_not_contact_elsewhere, other_id, "do_not_contact"),
                (p.invited_before, study_id, None),
            ):
                if flag:
                    conn.execute(
                        insert(Invitation.__table__).values(
                            study_id=study,
                            patient_id=p.id,
                            nhs_number=p.nhs_number,
                            study_number=f"OLD-{study}-{p.id}",
                            status="replied" if reply else "sent",
                            reply=reply,
                        )
                    )
    return World(run_id, {p.id: p for p in people})


def invited(engine: Engine, batch_id: int | None = None) -> dict[int, dict[str, Any]]:
    """patient id -> invitation row, for invitations made by letters runs."""
    inv = Invitation.__table__
    query = select(inv).where(inv.c.batch_id.is_not(None))
    if batch_id is not None:
        query = query.where(inv.c.batch_id == batch_id)
    with engine.connect() as conn:
        return {row.patient_id: dict(row._mapping) for row in conn.execute(query)}


def pdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    from recruit.letters.check import printed_text

    return printed_text(PdfReader(io.BytesIO(path.read_bytes())))


def squash(value: str) -> str:
    return re.sub(r"\s+", "", value)
