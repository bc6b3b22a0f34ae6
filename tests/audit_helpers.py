"""A small synthetic region taken through search, GP review, letters and replies, for audit tests.

Review decisions, invitations and replies are written straight into their tables, as the review
import and letters commands would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, insert, select

import synthetic_ehr
from recruit.load import load_extract
from recruit.models import Invitation, LetterBatch, Patient, ReviewDecision, SearchResult, SearchRun, Study
from recruit.query.run import run_search
from tests.search_helpers import fresh_engine

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules" / "instep.yaml"
INDEX = dt.date(2026, 11, 1)
REVIEW_REASONS = ("terminal_illness", "known_to_be_in_work", "safeguarding_concern")
REPLIES = (None, "interested", "not_interested", "now_in_work", "do_not_contact", None)


@dataclass
class Region:
    engine: Engine
    run_id: int
    extract_dir: Path


def synthetic_region(
    db_url: str, tmp: Path, practices: int = 3, patients: int = 900, seed: int = 7, review: bool = True
) -> Region:
    """Made-up practices loaded and searched, with decisions, letters and replies recorded."""
    out = tmp / "extract"
    synthetic_ehr.generate(
        out, practices=practices, patients=patients, seed=seed, formats=("ndjson",), workers=1
    )
    engine = fresh_engine(db_url)
    load_extract(engine, [out / "fhir"], extract_date=INDEX)
    run_id = run_search(engine, RULES, index_date=INDEX)
    if review:
        record_review_and_replies(engine, run_id)
    return Region(engine, run_id, out)


def instep_study_id(conn: Connection) -> int:
    """The InSTEP study's id, made if the database has none yet."""
    study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar()
    if study_id is None:
        study_id = conn.execute(
            insert(Study.__table__).values(code="instep", title="InSTEP").returning(Study.__table__.c.id)
        ).scalar_one()
    return study_id


def record_review_and_replies(engine: Engine, run_id: int) -> None:
    """Every fifth candidate left unreviewed, one in four reviewed turned down (with a reason), the
    rest invited; of the letters some drafted only, the rest sent, with a spread of replies."""
    result, patient = SearchResult.__table__, Patient.__table__
    with engine.begin() as conn:
        study_id = conn.execute(select(SearchRun.study_id).where(SearchRun.id == run_id)).scalar()
        if study_id is None:
            study_id = instep_study_id(conn)
        candidates = conn.execute(
            select(result.c.patient_id, patient.c.nhs_number)
            .join(patient, patient.c.id == result.c.patient_id)
            .where(result.c.run_id == run_id, result.c.outcome == "candidate")
            .order_by(result.c.patient_id)
        ).all()
        decisions, invitations = [], []
        for n, (patient_id, nhs_number) in enumerate(candidates):
            if n % 5 == 4:
                continue
            turned_down = n % 4 == 1
            decisions.append(
                {
                    "run_id": run_id,
                    "patient_id": patient_id,
                    "decision": "do_not_invite" if turned_down else "invite",
                    "reason_code": REVIEW_REASONS[n % 3] if turned_down else None,
                    "reason_text": "Seen in clinic last week" if turned_down else None,
                    "reviewer": "Dr Test",
                }
            )
            if turned_down or n % 7 == 3:  # some approved people get no letter
                continue
            reply = REPLIES[n % len(REPLIES)]
            invitations.append(
                {
                    "study_id": study_id,
                    "patient_id": patient_id,
                    "nhs_number": nhs_number or f"9{patient_id:09d}",
                    "run_id": run_id,
                    "study_number": f"R{run_id}-{patient_id}",
                    "status": "drafted" if n % 11 == 0 else ("replied" if reply else "sent"),
                    "reply": None if n % 11 == 0 else reply,
                }
            )
        if decisions:
            conn.execute(insert(ReviewDecision.__table__), decisions)
        if invitations:
            conn.execute(insert(Invitation.__table__), invitations)
        conn.execute(
            insert(LetterBatch.__table__).values(
                run_id=run_id,
                study_id=study_id,
                letters_written=len(invitations),
                refusals={"no_postal_address": 2},
            )
        )
