"""Who gets a letter: checked again at letter time, in one set-based query, on the latest data.

A search run may be days or weeks old by the time letters are printed; meanwhile a patient may
have died, left the practice, moved to another practice, opted out of research, answered "do not
contact me" to another study, or been invited by an earlier wave. So every patient the run found
(or the GP approved) is classified again here against the patient table as the latest extracts
left it, the codes in clinical_event, the records held back by a quarantined entry
(person_hold), and every invitation, and each refusal is counted with its reason. Only a patient
with no reason at all is written to. The first reason that applies, in REFUSALS order, is the
one counted.

The NHS number is the person: death, dissent, a "do not contact", an invitation, or a GP's "do
not invite" in this run, recorded under ANY patient row with the same NHS number (at another
practice, or a duplicate record at this one) applies to every row of that person. Only the
practice where the person is registered now may write: the latest registration start decides,
and when the dates cannot tell, nobody writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
from sqlalchemy.sql.selectable import FromClause

from recruit.query.codes_match import code_on_list_either_way, records_on_lists
from recruit.tables import (
    CODES,
    DECISION,
    EVENT,
    HOLD,
    INVITATION,
    PATIENT,
    PRACTICE,
    PRACTITIONER,
    RESULT,
)

# Reason key -> what it means, in the order they are checked (the first that applies counts).
# The labels are read by practice staff and in the trial's audit: plain words, no identifiers.
REFUSALS: dict[str, str] = {
    "excluded_by_search": "left out by the search itself",
    "not_reviewed": "not yet screened by a GP",
    "gp_said_do_not_invite": "a GP decided not to invite them",
    "gp_said_do_not_invite_other_record": "a GP decided not to invite them, on another record of theirs",
    "gp_said_do_not_invite_later": "a GP decided not to invite them later, when reviewing another search",
    "died": "has died (recorded on any of their records)",
    "unreadable_record_says_died": "a record that could not be read says they died",
    "no_longer_registered": "no longer registered with the practice",
    "unreadable_record_says_left": "a record that could not be read says they left the practice",
    "two_records_unclear": "two records of theirs in one practice's latest extract: unclear which is current",
    "registered_elsewhere": "registered at another practice now",
    "registration_unclear": "registration unclear: another practice also has them registered",
    "research_opt_out": "has opted out of research use of their record",
    "unreadable_record_says_opted_out": "a record that could not be read says they opted out",
    "asked_not_to_be_contacted": "asked not to be contacted about research",
    "already_invited": "already invited to this study",
    "pseudonymised": "from a pseudonymised extract: no name or address to write to",
    "no_nhs_number": "has no NHS number in the record",
    "no_name": "no name on record",
    "no_current_address": "no current postal address on record (listed for the practice)",
    "same_person_twice": "the same NHS number appears twice in this run",
    "details_do_not_fit_window": "name or address too long for the envelope window",
    "characters_cannot_be_printed": "name or address holds characters that cannot be printed",
    "layout_failed": "the letter could not be laid out for printing",
}

# The reasons above that mean a letter could not be printed (listed in could-not-print.csv); the
# person has no invitation and may be written to by a later run once the record is put right.
COULD_NOT_PRINT = ("details_do_not_fit_window", "characters_cannot_be_printed", "layout_failed")

# Keys that earlier versions stored in letter_batch.refusals, still labelled in the audit.
EARLIER_REFUSALS: dict[str, str] = {
    "no_usable_name_or_address": "no name, no address, or no fixed address (ZZ99 postcode)",
}

# A withdrawal of dissent counts only from a record in one of these states (NULL: loaded before
# record states were kept). A dissent record counts whatever its state: in doubt, no letter.
WITHDRAWAL_STATES = ("recorded", "active")


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
    # Approved with nothing against them but no current postal address: the practice is told.
    no_address: list[Candidate] = field(default_factory=list)
    # Patient id -> the reason counted for them (inside the practice only: never printed).
    refused: dict[int, str] = field(default_factory=dict)


def _blank(column: ColumnElement[str | None]) -> ColumnElement[bool]:
    return or_(column.is_(None), func.trim(column) == "")


def _has_code(
    patient_id: ColumnElement[int], codelist_ids: Sequence[int], category: str | None = None
) -> ColumnElement[bool]:
    """The patient has a record with a code from the lists (Read v2 prefix rows match by prefix)."""
    if not codelist_ids:
        return false()
    parts = []
    for by_prefix in (False, True):
        event, code = EVENT.alias(), CODES.alias()
        matched = records_on_lists(
            event,
            [literal(1)],
            codelist_ids,
            by_prefix=by_prefix,
            categories=None if category is None else [category],
            codes=code,
        )
        parts.append(exists(matched.where(event.c.patient_id == patient_id)))
    return or_(*parts)


def _same_person(other: FromClause, p: FromClause) -> ColumnElement[bool]:
    """`other` is a record of the same person as `p`: the same row, or the same NHS number."""
    return or_(other.c.id == p.c.id, and_(~_blank(p.c.nhs_number), other.c.nhs_number == p.c.nhs_number))


def _opt_out_kind(code: FromClause) -> tuple[ColumnElement[str], ColumnElement[bool]]:
    """A codelist row's kind of opt-out and whether it is a withdrawal, from its category:
    type1_dissent / type1_withdrawn -> (type1, no / yes). A category with neither ending (an
    older list's type1_opt_out, or none at all) is dissent: in doubt, no letter."""
    category = func.coalesce(code.c.category, "")
    length = func.length(category)
    withdrawn = category.endswith("_withdrawn", autoescape=True)
    kind = case(
        (withdrawn, func.substr(category, 1, length - 10)),
        (category.endswith("_dissent", autoescape=True), func.substr(category, 1, length - 8)),
        (category.endswith("_opt_out", autoescape=True), func.substr(category, 1, length - 8)),
        else_=category,
    )
    return kind, withdrawn


def _opted_out(p: FromClause, codelist_ids: Sequence[int]) -> ColumnElement[bool]:
    """For some kind of opt-out, the latest dated record over ALL the person's records is dissent
    (a dissent and a withdrawal on the same day: dissent wins)."""
    if not codelist_ids:
        return false()
    event, code, same = EVENT.alias(), CODES.alias(), PATIENT.alias()
    kind, withdrawn = _opt_out_kind(code)
    dissent_date = func.max(case((~withdrawn, event.c.event_date), else_=None))
    counts_as_withdrawal = and_(
        withdrawn, or_(event.c.status.is_(None), event.c.status.in_(WITHDRAWAL_STATES))
    )
    withdrawal_date = func.max(case((counts_as_withdrawal, event.c.event_date), else_=None))
    return exists(
        select(literal(1))
        .select_from(
            same.join(event, event.c.patient_id == same.c.id).join(
                code, code_on_list_either_way(code, event.c.code_system, event.c.code)
            )
        )
        .where(_same_person(same, p), code.c.codelist_id.in_(list(codelist_ids)))
        .group_by(kind)
        .having(
            and_(dissent_date.is_not(None), or_(withdrawal_date.is_(None), dissent_date >= withdrawal_date))
        )
    )


def _died(p: FromClause) -> ColumnElement[bool]:
    same = PATIENT.alias()
    return exists(
        select(literal(1)).select_from(same).where(_same_person(same, p), same.c.date_of_death.is_not(None))
    )


def _held(p: FromClause, signal: str, codelist_ids: Sequence[int] = ()) -> ColumnElement[bool]:
    """A quarantined record still signals this about the person. Death and dissent: a hold
    under their NHS number, or under any of their records' practice ids. Leaving: only a hold
    for this practice (or one whose practice is unknown) - leaving another practice is no
    reason not to write from this one. Unclear (two records of one person in one practice's
    extract): only while that practice's latest extract holds them."""
    hold, same = HOLD.alias(), PATIENT.alias()
    by_number = and_(~_blank(p.c.nhs_number), hold.c.nhs_number == p.c.nhs_number)
    if signal == "left":
        where: list[ColumnElement[bool]] = [
            or_(
                and_(by_number, or_(hold.c.practice_id.is_(None), hold.c.practice_id == p.c.practice_id)),
                and_(hold.c.practice_id == p.c.practice_id, hold.c.source_id == p.c.source_id),
            )
        ]
    else:
        by_record = exists(
            select(literal(1))
            .select_from(same)
            .where(
                _same_person(same, p),
                hold.c.practice_id == same.c.practice_id,
                hold.c.source_id == same.c.source_id,
            )
            .correlate_except(same)  # the hold one level up, the patient two levels up
        )
        where = [or_(by_number, by_record)]
    if signal == "unclear":
        # Only while the practice's latest extract still holds the second record: a cleaner
        # newer extract of that practice settles it.
        where.append(
            hold.c.extract_id
            == select(PRACTICE.c.extract_id).where(PRACTICE.c.id == hold.c.practice_id).scalar_subquery()
        )
    if signal == "code":
        if not codelist_ids:
            return false()
        code = CODES.alias()
        _, withdrawn = _opt_out_kind(code)
        where.append(
            exists(
                select(literal(1))
                .select_from(code)
                .where(
                    code.c.codelist_id.in_(list(codelist_ids)),
                    ~withdrawn,
                    code_on_list_either_way(code, hold.c.code_system, hold.c.code),
                )
            )
        )
    return exists(select(literal(1)).select_from(hold).where(hold.c.signal == signal, *where))


def _registered_elsewhere(p: FromClause, unclear: bool) -> ColumnElement[bool]:
    """Another record of the person's NHS number at ANOTHER practice started later (moved
    there), or - `unclear` - on the same day, or either start is unknown while that record is
    still open: the current registration cannot be told, so this practice does not write."""
    other = PATIENT.alias()
    if unclear:
        when = or_(
            other.c.registration_start == p.c.registration_start,
            and_(
                or_(other.c.registration_start.is_(None), p.c.registration_start.is_(None)),
                other.c.registration_end.is_(None),
            ),
        )
    else:
        when = other.c.registration_start > p.c.registration_start
    return exists(
        select(literal(1))
        .select_from(other)
        .where(
            ~_blank(p.c.nhs_number),
            other.c.nhs_number == p.c.nhs_number,
            other.c.practice_id != p.c.practice_id,
            when,
        )
    )


def _said_no(
    p: FromClause, where: Callable[[FromClause, FromClause], Sequence[ColumnElement[bool]]]
) -> ColumnElement[bool]:
    """A GP said "do not invite" for a record of the same person as `p`, in a decision that also
    meets `where(record, decision)`."""
    same, decision = PATIENT.alias(), DECISION.alias()
    return exists(
        select(literal(1))
        .select_from(same.join(decision, decision.c.patient_id == same.c.id))
        .where(_same_person(same, p), decision.c.decision != "invite", *where(same, decision))
    )


def _other_record_refused(p: FromClause, run_id: int) -> ColumnElement[bool]:
    """A GP said "do not invite" in this run for another record of the same person."""
    return _said_no(p, lambda same, decision: (same.c.id != p.c.id, decision.c.run_id == run_id))


def _refused_later(p: FromClause, review: FromClause, run_id: int) -> ColumnElement[bool]:
    """A GP said "do not invite" for this person (any record of theirs) when reviewing another
    search, after this run's Invite: their latest decision is not to invite."""
    return _said_no(
        p,
        lambda _, decision: (decision.c.run_id != run_id, decision.c.decided_at > review.c.decided_at),
    )


def _invitation(p: FromClause, condition: Callable[[FromClause], ColumnElement[bool]]) -> ColumnElement[bool]:
    """An invitation matching the patient by row or by NHS number (the key across practices)."""
    by_row, by_number = INVITATION.alias(), INVITATION.alias()
    return or_(
        exists(
            select(literal(1)).select_from(by_row).where(by_row.c.patient_id == p.c.id, condition(by_row))
        ),
        exists(
            select(literal(1))
            .select_from(by_number)
            .where(by_number.c.nhs_number == p.c.nhs_number, condition(by_number))
        ),
    )


def _no_text(column: ColumnElement[str | None]) -> ColumnElement[bool]:
    """NULL, or nothing but spaces, tabs and line breaks (an address is lines joined by \n)."""
    text: ColumnElement[str] = func.coalesce(column, "")
    for space in ("\n", "\r", "\t"):
        text = func.replace(text, space, "")
    return func.trim(text) == ""


def no_current_address(p: FromClause) -> ColumnElement[bool]:
    """No address to post to: blank address or postcode, or the no-fixed-abode ZZ99 postcode."""
    postcode = func.upper(func.replace(func.coalesce(p.c.postcode, ""), " ", ""))
    return or_(_no_text(p.c.address), postcode == "", postcode.like("ZZ99%"))


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
    reason = case(
        (func.coalesce(result.c.outcome, "") != "candidate", literal("excluded_by_search")),
        (review.c.decision.is_(None), literal("not_reviewed")),
        (review.c.decision != "invite", literal("gp_said_do_not_invite")),
        (_other_record_refused(p, run_id), literal("gp_said_do_not_invite_other_record")),
        (_refused_later(p, review, run_id), literal("gp_said_do_not_invite_later")),
        (_died(p), literal("died")),
        (_held(p, "death"), literal("unreadable_record_says_died")),
        (p.c.registration_end.is_not(None), literal("no_longer_registered")),
        (_held(p, "left"), literal("unreadable_record_says_left")),
        (_registered_elsewhere(p, unclear=False), literal("registered_elsewhere")),
        (_registered_elsewhere(p, unclear=True), literal("registration_unclear")),
        (_held(p, "unclear"), literal("two_records_unclear")),
        (_opted_out(p, opt_out_codelists), literal("research_opt_out")),
        (_held(p, "code", opt_out_codelists), literal("unreadable_record_says_opted_out")),
        (
            _invitation(p, lambda i: or_(i.c.status == "do_not_contact", i.c.reply == "do_not_contact")),
            literal("asked_not_to_be_contacted"),
        ),
        (_invitation(p, lambda i: i.c.study_id == study_id), literal("already_invited")),
        (p.c.pseudonymised == true(), literal("pseudonymised")),
        (_blank(p.c.nhs_number), literal("no_nhs_number")),
        (and_(_blank(p.c.given_name), _blank(p.c.family_name)), literal("no_name")),
        (no_current_address(p), literal("no_current_address")),
        else_=literal(None),
    ).label("reason")

    def need(flag: ColumnElement[bool | None], category: str) -> ColumnElement[int]:
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
    refused: dict[int, str] = {}
    eligible: list[Candidate] = []
    unaddressed: list[Candidate] = []
    seen_numbers: set[str] = set()
    for row in conn.execute(query):
        why = row.reason
        if why in (None, "no_current_address") and row.nhs_number in seen_numbers:
            why = "same_person_twice"
        if why is not None:
            refusals[why] = refusals.get(why, 0) + 1
            refused[row.id] = why
        if why not in (None, "no_current_address"):
            continue
        seen_numbers.add(row.nhs_number)
        candidate = Candidate(
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
        (eligible if why is None else unaddressed).append(candidate)
    return Classification(eligible, refusals, unaddressed, refused)


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
