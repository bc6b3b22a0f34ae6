"""Who gets a letter: checked again at letter time, in one set-based query, on the latest data.

A search run may be days or weeks old by the time letters are printed; meanwhile a patient may
have died, left the practice, opted out of research, answered "do not contact me" to another
study, or been invited by an earlier wave. So every patient the run found (or the GP approved)
is classified again here against the patient table as the latest extract left it, the codes in
clinical_event, and every invitation, and each refusal is counted with its reason. Only a
patient with no reason at all is written to. The first reason that applies, in REFUSALS order,
is the one counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.sql.elements import ColumnElement

from recruit.tables import CODES, DECISION, EVENT, INVITATION, PATIENT, PRACTICE, PRACTITIONER, RESULT

# Reason key -> what it means, in the order they are checked (the first that applies counts).
REFUSALS: dict[str, str] = {
    "excluded_by_search": "left out by the search itself",
    "not_reviewed": "not yet screened by a GP",
    "gp_said_do_not_invite": "a GP decided not to invite them",
    "died": "has died (recorded since the search, or before)",
    "no_longer_registered": "no longer registered with the practice",
    "research_opt_out": "has opted out of research use of their record",
    "asked_not_to_be_contacted": "asked not to be contacted about research",
    "already_invited": "already invited to this study",
    "no_nhs_number": "has no NHS number in the record",
    "no_usable_name_or_address": "no name, no address, or no fixed address (ZZ99 postcode)",
    "same_person_twice": "the same NHS number appears twice in this run",
    "details_do_not_fit_window": "name or address too long for the envelope window",
}


@dataclass(frozen=True)
class Candidate:
    """An approved patient with nothing against writing to them."""

    patient_id: int
    nhs_number: str
    rank: int | None
    title: str | None
    given_name: str | None
    family_name: str | None
    address: str | None
    postcode: str | None
    practice_id: int
    usual_gp_id: int | None
    language: str | None
    needs_large_print: bool
    needs_easy_read: bool
    needs_braille: bool
    needs_interpreter: bool


@dataclass(frozen=True)
class Classification:
    eligible: list[Candidate]
    refusals: dict[str, int]


def _blank(column: ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(column.is_(None), func.trim(column) == "")


def _has_code(
    patient_id: ColumnElement[Any], codelist_ids: Sequence[int], category: str | None = None
) -> Any:
    """The patient has a record with a code from the lists (Read v2 prefix rows match by prefix)."""
    if not codelist_ids:
        return false()
    ids = list(codelist_ids)
    parts = []
    for prefix in (False, True):
        event, code = EVENT.alias(), CODES.alias()
        if prefix:
            stem = func.rtrim(code.c.code, ".")
            match = and_(
                code.c.code_system == event.c.code_system,
                func.substr(event.c.code, 1, func.length(stem)) == stem,
                code.c.match_prefix == true(),
            )
        else:
            match = and_(
                code.c.code_system == event.c.code_system,
                code.c.code == event.c.code,
                code.c.match_prefix == false(),
            )
        where = [event.c.patient_id == patient_id, code.c.codelist_id.in_(ids)]
        if category is not None:
            where.append(code.c.category == category)
        parts.append(exists(select(literal(1)).select_from(event.join(code, match)).where(*where)))
    return or_(*parts)


def _invitation(patient_id: ColumnElement[Any], nhs_number: ColumnElement[Any], condition: Any) -> Any:
    """An invitation matching the patient by row or by NHS number (the key across practices)."""
    by_row, by_number = INVITATION.alias(), INVITATION.alias()
    return or_(
        exists(
            select(literal(1)).select_from(by_row).where(by_row.c.patient_id == patient_id, condition(by_row))
        ),
        exists(
            select(literal(1))
            .select_from(by_number)
            .where(by_number.c.nhs_number == nhs_number, condition(by_number))
        ),
    )


def classify(
    conn: Connection,
    run_id: int,
    study_id: int,
    opt_out_codelists: Sequence[int],
    accessible_codelists: Sequence[int],
) -> Classification:
    """Every patient the run found or the GP screened, with the first reason not to write to them."""
    found = union(
        select(RESULT.c.patient_id).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate"),
        select(DECISION.c.patient_id).where(DECISION.c.run_id == run_id),
    ).subquery("found")
    p = PATIENT
    result = RESULT.alias("result")
    review = DECISION.alias("review")
    postcode = func.upper(func.replace(func.coalesce(p.c.postcode, ""), " ", ""))
    reason = case(
        (func.coalesce(result.c.outcome, "") != "candidate", literal("excluded_by_search")),
        (review.c.decision.is_(None), literal("not_reviewed")),
        (review.c.decision != "invite", literal("gp_said_do_not_invite")),
        (p.c.date_of_death.is_not(None), literal("died")),
        (p.c.registration_end.is_not(None), literal("no_longer_registered")),
        (_has_code(p.c.id, opt_out_codelists), literal("research_opt_out")),
        (
            _invitation(
                p.c.id,
                p.c.nhs_number,
                lambda i: or_(i.c.status == "do_not_contact", i.c.reply == "do_not_contact"),
            ),
            literal("asked_not_to_be_contacted"),
        ),
        (_invitation(p.c.id, p.c.nhs_number, lambda i: i.c.study_id == study_id), literal("already_invited")),
        (_blank(p.c.nhs_number), literal("no_nhs_number")),
        (
            or_(
                and_(_blank(p.c.given_name), _blank(p.c.family_name)),
                _blank(p.c.address),
                postcode == "",
                postcode.like("ZZ99%"),
            ),
            literal("no_usable_name_or_address"),
        ),
        else_=literal(None),
    ).label("reason")

    def need(flag: ColumnElement[Any], category: str) -> Any:
        return case((or_(flag == true(), _has_code(p.c.id, accessible_codelists, category)), 1), else_=0)

    query = (
        select(
            p.c.id,
            p.c.nhs_number,
            result.c.rank,
            p.c.title,
            p.c.given_name,
            p.c.family_name,
            p.c.address,
            p.c.postcode,
            p.c.practice_id,
            p.c.usual_gp_id,
            p.c.language,
            need(p.c.needs_large_print, "large_print").label("large_print"),
            need(p.c.needs_easy_read, "easy_read").label("easy_read"),
            need(p.c.needs_braille, "braille").label("braille"),
            need(p.c.needs_interpreter, "interpreter").label("interpreter"),
            reason,
        )
        .select_from(found)
        .join(p, p.c.id == found.c.patient_id)
        .outerjoin(result, and_(result.c.run_id == run_id, result.c.patient_id == p.c.id))
        .outerjoin(review, and_(review.c.run_id == run_id, review.c.patient_id == p.c.id))
        .order_by(case((result.c.rank.is_(None), 1), else_=0), result.c.rank, p.c.id)
    )
    refusals: dict[str, int] = {}
    eligible: list[Candidate] = []
    seen_numbers: set[str] = set()
    for row in conn.execute(query):
        why = row.reason
        if why is None and row.nhs_number in seen_numbers:
            why = "same_person_twice"
        if why is not None:
            refusals[why] = refusals.get(why, 0) + 1
            continue
        seen_numbers.add(row.nhs_number)
        eligible.append(
            Candidate(
                patient_id=row.id,
                nhs_number=row.nhs_number,
                rank=row.rank,
                title=row.title,
                given_name=row.given_name,
                family_name=row.family_name,
                address=row.address,
                postcode=row.postcode,
                practice_id=row.practice_id,
                usual_gp_id=row.usual_gp_id,
                language=row.language,
                needs_large_print=bool(row.large_print),
                needs_easy_read=bool(row.easy_read),
                needs_braille=bool(row.braille),
                needs_interpreter=bool(row.interpreter),
            )
        )
    return Classification(eligible, refusals)


@dataclass(frozen=True)
class PracticeRow:
    id: int
    ods_code: str
    name: str
    address: str | None
    postcode: str | None
    telephone: str | None
    email: str | None


@dataclass(frozen=True)
class GPRow:
    id: int
    title: str | None
    given_name: str | None
    family_name: str | None
    role: str | None


def practices(conn: Connection, ids: Sequence[int]) -> dict[int, PracticeRow]:
    rows = conn.execute(select(PRACTICE).where(PRACTICE.c.id.in_(list(ids))))
    return {
        r.id: PracticeRow(r.id, r.ods_code, r.name, r.address, r.postcode, r.telephone, r.email) for r in rows
    }


def gps(conn: Connection, practice_ids: Sequence[int]) -> dict[int, GPRow]:
    rows = conn.execute(select(PRACTITIONER).where(PRACTITIONER.c.practice_id.in_(list(practice_ids))))
    return {r.id: GPRow(r.id, r.title, r.given_name, r.family_name, r.role) for r in rows}


def commonest_usual_gp(conn: Connection, practice_ids: Sequence[int]) -> dict[int, int]:
    """Practice -> the GP who is usual GP to most of its registered patients (ties: lowest id)."""
    count = func.count().label("n")
    rows = conn.execute(
        select(PATIENT.c.practice_id, PATIENT.c.usual_gp_id, count)
        .where(
            PATIENT.c.practice_id.in_(list(practice_ids)),
            PATIENT.c.usual_gp_id.is_not(None),
            PATIENT.c.registration_end.is_(None),
            PATIENT.c.date_of_death.is_(None),
        )
        .group_by(PATIENT.c.practice_id, PATIENT.c.usual_gp_id)
    ).all()
    best: dict[int, tuple[int, int]] = {}
    for practice_id, gp_id, n in rows:
        current = best.get(practice_id)
        if current is None or (n, -gp_id) > (current[1], -current[0]):
            best[practice_id] = (gp_id, n)
    return {practice_id: gp_id for practice_id, (gp_id, _) in best.items()}
