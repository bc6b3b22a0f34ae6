"""GP screening: a search run's candidates out to a workbook, and the GP's decisions back in.

GPs know their patients and must screen the list before anyone is written to (CPRD and Scottish
practice workflows, shared/reference/letters-and-review.md sections 1.5 and (b)). The workbook is
one row per candidate, in wave order, with what made them a candidate, their latest work-status
record, and a Decision and a Reason column chosen from lists.

A search run stores evidence only for the people a step excluded, so the evidence for candidates
is worked out at export time: the run's own rule file and codelists (as stored with the run) are
evaluated over the run's candidates on its index date, against the records loaded now.

Importing is all or nothing. Any row that does not match the run (a changed hidden key or NHS
number, a copied row, a row from another run or for someone who is not a candidate) refuses the
whole sheet, naming the sheet's row numbers, because a sheet that has been tampered with cannot
be trusted row by row. Re-importing is how a review continues: decided rows are recorded or
updated, unchanged rows are left alone, and a blank Decision never undoes an earlier decision
(change it to the other decision instead). Once a letter has been written to someone, their
decision can no longer be changed from a sheet.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    Table,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)

from recruit.codelists import Code, Codelist, CodeSystem
from recruit.errors import RecruitError
from recruit.models import (
    utcnow,
)
from recruit.query.compiler import Compiler
from recruit.query.dates import months_before
from recruit.rules.model import (
    EVER,
    Criterion,
    LatestCodeAmong,
    RuleSet,
    StatusSource,
)
from recruit.tables import CODELIST, CODES, DECISION, INVITATION, PATIENT, PRACTICE, RESULT, RUN, STUDY
from recruit.workbook import match_headers, open_workbook, put_text

# What the GP chooses from: stored code -> the words on the sheet.
DECISIONS: Mapping[str, str] = MappingProxyType({"invite": "Invite", "do_not_invite": "Do not invite"})
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "recent_bereavement": "Recent bereavement",
        "terminal_or_palliative": "Terminal or palliative illness",
        "serious_illness_or_in_hospital": "Serious new illness or in hospital",
        "lacks_capacity": "Lacks capacity",
        "mental_health_crisis": "Mental health crisis",
        "safeguarding": "Safeguarding concern",
        "in_work_or_retired": "Known to be in work or retired",
        "pain_resolved": "Pain resolved",
        "recently_in_another_study": "Recently in another study",
        "no_valid_address": "No valid address",
        "needs_different_approach": "Needs a different approach",
        "other": "Other",
    }
)

SHEET = "Review"
INSTRUCTIONS = "Instructions"
LISTS = "Lists"
META = "recruit"
FORMAT = "recruit review sheet 1"
MAX_LISTED = 40  # problems listed in a refusal before "and N more"

SYSTEM_NAMES = {"snomedct": "SNOMED CT", "readv2": "Read v2", "ctv3": "CTV3", "dmd": "dm+d"}
STATUS_WORDS = {"out_of_work": "Out of work", "in_work": "In work", "not_in_paid_work": "Not in paid work"}


# --- the candidates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the GP sees them."""

    key: str
    patient_id: int
    rank: int | None
    score: float | None
    name: str
    date_of_birth: dt.date | None
    nhs_number: str
    address: str
    postcode: str
    practice: str
    why: str
    work: str
    score_parts: str
    check_first: str


def format_nhs_number(number: str | None) -> str:
    """'9434765919' -> '943 476 5919' (the NHS Number standard's 3-3-4 layout)."""
    digits = re.sub(r"\D", "", number or "")
    if len(digits) != 10:
        return number or ""
    return f"{digits[:3]} {digits[3:6]} {digits[6:]}"


def row_key(run_id: int, patient_id: int) -> str:
    return f"{run_id}-{patient_id}"


def day_words(day: dt.date | None) -> str:
    """12 Mar 2024: unambiguous in every locale."""
    return "" if day is None else f"{day.day} {day:%b %Y}"


def _run(conn: Connection, run_id: int) -> Any:
    run = conn.execute(select(RUN).where(RUN.c.id == run_id)).one_or_none()
    if run is None:
        raise RecruitError(f"There is no search run {run_id}. `recruit search` prints each run's number.")
    if run.status != "finished":
        what = "failed" if run.status == "failed" else "has not finished"
        raise RecruitError(f"Search run {run_id} {what}, so it has no list to review. Run the search again.")
    return run


def candidate_rows(engine: Engine, run_id: int, today: dt.date | None = None) -> list[CandidateRow]:
    """The run's candidates in wave order (rank, then patient), with their evidence in words."""
    today = today or dt.date.today()
    with engine.begin() as conn:
        run = _run(conn, run_id)
        explained = _explain(conn, run)
        query = (
            select(
                RESULT.c.patient_id,
                RESULT.c.rank,
                RESULT.c.score,
                PATIENT,
                PRACTICE.c.name.label("practice_name"),
                PRACTICE.c.ods_code,
            )
            .join(PATIENT, PATIENT.c.id == RESULT.c.patient_id)
            .join(PRACTICE, PRACTICE.c.id == RESULT.c.practice_id)
            .where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
            .order_by(RESULT.c.rank.is_(None), RESULT.c.rank, RESULT.c.patient_id)
        )
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        pid = r.patient_id
        name = " ".join(p for p in (r.title, r.given_name, r.family_name) if p and p.strip())
        address = ", ".join(line.strip() for line in (r.address or "").splitlines() if line.strip())
        out.append(
            CandidateRow(
                key=row_key(run_id, pid),
                patient_id=pid,
                rank=r.rank,
                score=r.score,
                name=name,
                date_of_birth=r.date_of_birth,
                nhs_number=format_nhs_number(r.nhs_number),
                address=address,
                postcode=r.postcode or "",
                practice=f"{r.practice_name} ({r.ods_code})",
                why="\n".join(explained.why.get(pid, [])) or explained.missing,
                work=explained.work.get(pid, explained.no_work),
                score_parts=", ".join(explained.score_parts.get(pid, [])),
                check_first="\n".join(_check_first(r, today)),
            )
        )
    return out


def _check_first(r: Any, today: dt.date) -> list[str]:
    """What changed since the search, or needs that mean a standard letter will not do."""
    notes = []
    if r.date_of_death is not None:
        notes.append(f"Record shows a date of death: {day_words(r.date_of_death)}")
    if r.registration_end is not None and r.registration_end <= today:
        notes.append(f"Registration ended {day_words(r.registration_end)}")
    if r.needs_large_print:
        notes.append("Needs large print")
    if r.needs_easy_read:
        notes.append("Needs easy read")
    if r.needs_braille:
        notes.append("Needs Braille")
    if r.needs_interpreter:
        notes.append("Needs an interpreter" + (f" ({r.language})" if r.language else ""))
    return notes


# --- evidence for candidates ---------------------------------------------------------------------


@dataclass
class _Explained:
    why: dict[int, list[str]] = field(default_factory=dict)
    work: dict[int, str] = field(default_factory=dict)
    score_parts: dict[int, list[str]] = field(default_factory=dict)
    missing: str = ""
    no_work: str = "No work, fit note or benefit record"


class _CandidateCompiler(Compiler):
    """The run's rules evaluated over its candidates only."""

    def __init__(
        self,
        conn: Connection,
        run_id: int,
        rule_set: RuleSet,
        index_date: dt.date,
        codelist_ids: Mapping[str, int],
        codelists: Mapping[str, Codelist],
    ) -> None:
        self.run_id = run_id
        # A practice id (any) makes every codelist match join the population, here the
        # candidates, so the work grows with the number of candidates, not of people loaded.
        super().__init__(conn, rule_set, index_date, codelist_ids, codelists, practice_id=0)

    def _make_population(self) -> Table:
        table = self.temp_table(
            Column("patient_id", Integer, primary_key=True, autoincrement=False),
            Column("practice_id", Integer, nullable=False),
        )
        query = select(RESULT.c.patient_id, RESULT.c.practice_id).where(
            RESULT.c.run_id == self.run_id, RESULT.c.outcome == "candidate"
        )
        self.fill(table, ["patient_id", "practice_id"], query)
        return table


def _explain(conn: Connection, run: Any) -> _Explained:
    """Each candidate's evidence, from the rule file and codelists stored with the run."""
    explained = _Explained()
    rule_set = _rules_of_run(run)
    stored = _stored_codelists(conn, run.codelist_fingerprints or {})
    if rule_set is None or rule_set.fingerprint() != run.rule_set_fingerprint or stored is None:
        explained.missing = "Met every step of the search (this run did not keep its rules, so no detail)"
        explained.no_work = ""
        return explained
    codelists, ids = stored
    compiler = _CandidateCompiler(conn, run.id, rule_set, run.index_date, ids, codelists)
    pop = compiler.population
    assert pop is not None
    compiler.prepare([step.criterion for step in rule_set.steps] + [c.criterion for c in rule_set.score])
    for step in rule_set.steps:
        if step.kind == "include" and compiler.can_have_evidence(step.criterion):
            table = compiler.evidence(step.criterion, pop)
            if table is None:
                continue
            for ev in conn.execute(select(table)):
                words = _record_words(ev.ev_term, ev.ev_system, ev.ev_code, ev.ev_date)
                explained.why.setdefault(ev.patient_id, []).append(f"{step.reason}: {words}")
    for component in rule_set.score:
        table = compiler.held_among(component.criterion, pop)
        label = f"{component.id.replace('_', ' ')} (+{component.weight:g})"
        for pid in conn.execute(select(table.c.patient_id)).scalars():
            explained.score_parts.setdefault(pid, []).append(label)
    work = _work_sources(rule_set)
    if work is None:
        explained.no_work = "(this search does not look at work status)"
    else:
        sources, look_back = work
        statuses = sorted({s.status for s in sources})
        # Any date, not only the search's look-back: an older fit note still helps the GP.
        deciding = compiler.deciding_table(LatestCodeAmong(sources=sources, window=EVER, status_in=statuses))
        since = months_before(run.index_date, look_back) if look_back else None
        for ev in conn.execute(select(deciding)):
            status = STATUS_WORDS.get(ev.status, ev.status.replace("_", " ").capitalize())
            text = f"{status}: {_record_words(ev.ev_term, ev.ev_system, ev.ev_code, ev.ev_date)}"
            if since is not None and ev.ev_date < since:
                text += f" (older than the search's {look_back}-month look-back)"
            explained.work[ev.patient_id] = text
    compiler.drop()
    return explained


def _rules_of_run(run: Any) -> RuleSet | None:
    """The rule set stored with the run. It was checked when the run was made, so this only
    needs the fast YAML reader, not parse_rule_set's line-by-line error reporting."""
    if not run.rule_set_text:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return RuleSet.model_validate(yaml.load(run.rule_set_text, Loader=loader))
    except (yaml.YAMLError, ValidationError):
        return None


def _record_words(term: str | None, system: str | None, code: str | None, day: Any) -> str:
    if isinstance(day, str):
        day = dt.date.fromisoformat(day[:10])
    label = SYSTEM_NAMES.get(system or "", system or "")
    return f"{term or code} ({label} {code}), {day_words(day)}"


def _stored_codelists(
    conn: Connection, fingerprints: Mapping[str, str]
) -> tuple[dict[str, Codelist], dict[str, int]] | None:
    """The codelists exactly as the run used them (stored with it): their ids, which the SQL joins
    on, and the rows matched by prefix, the only ones the compiler needs to see in Python."""
    codelists: dict[str, Codelist] = {}
    ids: dict[str, int] = {}
    for name, fingerprint in fingerprints.items():
        row = conn.execute(
            select(CODELIST.c.id, CODELIST.c.version).where(
                CODELIST.c.name == name, CODELIST.c.fingerprint == fingerprint
            )
        ).first()
        if row is None:
            return None
        prefixed = conn.execute(
            select(CODES).where(CODES.c.codelist_id == row.id, CODES.c.match_prefix == true())
        )
        codes = tuple(
            Code(
                CodeSystem(c.code_system),
                c.code,
                c.term or "",
                MappingProxyType({"match": "prefix", **({"category": c.category} if c.category else {})}),
            )
            for c in prefixed
        )
        codelists[name] = Codelist(name, codes, row.version or "", (), fingerprint)
        ids[name] = row.id
    return codelists, ids


def _work_sources(rule_set: RuleSet) -> tuple[list[StatusSource], int | None] | None:
    """The work-status evidence the rules use: a likely_in_work criterion's, else the first
    latest_code_among's; with the look-back in months when the rules give one."""

    def found(criterion: Criterion, kind: str, seen: frozenset[str]) -> Any:
        if criterion.kind == "ref":
            if criterion.ref in seen:
                return None
            return found(rule_set.definitions[criterion.ref], kind, seen | {criterion.ref})
        if criterion.kind == kind:
            return criterion.body
        children = []
        if criterion.kind in ("all_", "any_"):
            children = list(criterion.body)
        elif criterion.kind == "not_":
            children = [criterion.body]
        return next((b for c in children if (b := found(c, kind, seen)) is not None), None)

    for kind in ("likely_in_work", "latest_code_among"):
        for _, criterion in rule_set.criteria():
            body = found(criterion, kind, frozenset())
            if body is None:
                continue
            if kind == "likely_in_work":
                return list(body.evidence), body.look_back_months
            return list(body.sources), body.window.last_months
    return None


# --- export --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Col:
    header: str
    width: float
    editable: bool = False
    wrap: bool = False


COLUMNS = (
    _Col("Key", 10),
    _Col("Rank", 7),
    _Col("Score", 7),
    _Col("Name", 26, wrap=True),
    _Col("Date of birth", 13),
    _Col("NHS number", 14),
    _Col("Address", 34, wrap=True),
    _Col("Postcode", 10),
    _Col("Practice", 22, wrap=True),
    _Col("Why on the list", 55, wrap=True),
    _Col("Latest work, fit note or benefit record", 45, wrap=True),
    _Col("Score made up of", 30, wrap=True),
    _Col("Check first", 26, wrap=True),
    _Col("Decision", 15, editable=True),
    _Col("Reason (if not inviting)", 32, editable=True),
    _Col("Other reason or note", 36, editable=True, wrap=True),
)
HEADERS = {c.header: i + 1 for i, c in enumerate(COLUMNS)}
IMPORT_HEADERS = {
    "key": ["Key"],
    "nhs": ["NHS number"],
    "decision": ["Decision"],
    "reason": ["Reason (if not inviting)", "Reason"],
    "detail": ["Other reason or note", "Other reason", "Note"],
}


@dataclass(frozen=True)
class ExportSummary:
    run_id: int
    path: Path
    rows: int


def export_review(
    engine: Engine, run_id: int, out: Path | str, today: dt.date | None = None
) -> ExportSummary:
    """Write the run's candidates to an .xlsx workbook for GP screening."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    out = Path(out)
    if out.suffix.lower() != ".xlsx":
        raise RecruitError(f"The review workbook must be an .xlsx file, not {out.name}.")
    rows = candidate_rows(engine, run_id, today)
    with engine.connect() as conn:
        run = _run(conn, run_id)
        study = None
        if run.study_id is not None:
            study = conn.execute(select(STUDY.c.title).where(STUDY.c.id == run.study_id)).scalar()

    wb = Workbook()
    guide = wb.active
    guide.title = INSTRUCTIONS
    sheet = wb.create_sheet(SHEET)
    lists = wb.create_sheet(LISTS)
    meta = wb.create_sheet(META)

    # Lists for the dropdowns (an inline list is limited to 255 characters in Excel).
    for i, label in enumerate(DECISIONS.values(), 1):
        put_text(lists.cell(i, 1), label)
    for i, label in enumerate(REASONS.values(), 1):
        put_text(lists.cell(i, 2), label)
    lists.sheet_state = "hidden"
    lists.protection.sheet = True

    for i, (name, value) in enumerate(
        (
            ("format", FORMAT),
            ("run", str(run_id)),
            ("rows", str(len(rows))),
            ("exported", utcnow().isoformat()),
        ),
        1,
    ):
        put_text(meta.cell(i, 1), name)
        put_text(meta.cell(i, 2), value)
    meta.sheet_state = "veryHidden"
    meta.protection.sheet = True

    header_fill = PatternFill("solid", fgColor="D9D9D9")
    edit_fill = PatternFill("solid", fgColor="FFF2CC")
    top = Alignment(vertical="top")
    top_wrap = Alignment(vertical="top", wrap_text=True)
    for c, col in enumerate(COLUMNS, 1):
        cell = sheet.cell(1, c)
        put_text(cell, col.header)
        cell.font = Font(bold=True)
        cell.fill = edit_fill if col.editable else header_fill
        cell.alignment = Alignment(vertical="top", wrap_text=True)
        sheet.column_dimensions[get_column_letter(c)].width = col.width
    sheet.column_dimensions["A"].hidden = True
    for r, row in enumerate(rows, 2):
        values: list[Any] = [
            row.key,
            row.rank,
            row.score,
            row.name,
            row.date_of_birth,
            row.nhs_number,
            row.address,
            row.postcode,
            row.practice,
            row.why,
            row.work,
            row.score_parts,
            row.check_first,
        ]
        for c, value in enumerate(values, 1):
            cell = sheet.cell(r, c)
            if isinstance(value, str):
                put_text(cell, value)
            else:
                cell.value = value
            cell.alignment = top_wrap if COLUMNS[c - 1].wrap else top
        sheet.cell(r, HEADERS["Date of birth"]).number_format = "DD/MM/YYYY"
        for c, col in enumerate(COLUMNS, 1):
            if col.editable:
                cell = sheet.cell(r, c)
                cell.protection = Protection(locked=False)
                cell.fill = edit_fill
                cell.alignment = top_wrap if col.wrap else top
    last = len(rows) + 1
    if rows:
        decision_col = get_column_letter(HEADERS["Decision"])
        reason_col = get_column_letter(HEADERS["Reason (if not inviting)"])
        pick_decision = DataValidation(
            type="list",
            formula1=f"={LISTS}!$A$1:$A${len(DECISIONS)}",
            allow_blank=True,
            showErrorMessage=True,
            errorTitle="Decision",
            error="Choose Invite or Do not invite from the list (or leave it empty if not decided yet).",
        )
        pick_reason = DataValidation(
            type="list",
            formula1=f"={LISTS}!$B$1:$B${len(REASONS)}",
            allow_blank=True,
            showErrorMessage=True,
            errorTitle="Reason",
            error="Choose a reason from the list. "
            "If none fits, choose Other and write it in the next column.",
        )
        pick_decision.add(f"{decision_col}2:{decision_col}{last}")
        pick_reason.add(f"{reason_col}2:{reason_col}{last}")
        sheet.add_data_validation(pick_decision)
        sheet.add_data_validation(pick_reason)
    sheet.freeze_panes = "E2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{last}"
    # Protected without a password, against accidental edits: only the yellow columns change.
    # Sorting, filtering and resizing stay allowed (rows are matched by their hidden key).
    sheet.protection.sheet = True
    sheet.protection.sort = False
    sheet.protection.autoFilter = False
    sheet.protection.formatColumns = False
    sheet.protection.formatRows = False
    sheet.print_title_rows = "1:1"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0

    _write_instructions(guide, run, study, len(rows))
    wb.active = 0
    try:
        wb.save(out)
    except OSError as exc:
        raise RecruitError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    return ExportSummary(run_id, out, len(rows))


def _write_instructions(sheet: Any, run: Any, study: str | None, n: int) -> None:
    from openpyxl.styles import Alignment, Font

    what = study or run.rule_set_name
    lines: list[tuple[str, bool]] = [
        (f"GP screening list: search run {run.id}", True),
        (
            f"{n} people found by the {run.rule_set_name} search (version {run.rule_set_version}), "
            f"searched as on {day_words(run.index_date)}. They might be invited to: {what}.",
            False,
        ),
        ("", False),
        ("This file holds names, dates of birth, NHS numbers and addresses.", True),
        (
            "Keep it inside the practice: save it only on practice computers or secure NHS storage, "
            "do not email it outside the NHS, and delete spare copies once the decisions are imported.",
            False,
        ),
        ("", False),
        ("What to do", True),
        (
            "1. Open the Review sheet. Each row is one person. Rank 1 has the strongest evidence of "
            "being out of work; letters go out in that order.",
            False,
        ),
        ("2. In the Decision column, choose Invite or Do not invite from the list.", False),
        (
            "3. For Do not invite, choose a reason from the Reason column. "
            "If none fits, choose Other and write a short reason in the last column.",
            False,
        ),
        (
            "4. Leave the Decision empty if you have not decided yet. Nobody is written to "
            "until a GP has chosen Invite for them.",
            False,
        ),
        (
            "5. 'Check first' shows changes since the search (a death, leaving the practice) and "
            "needs such as large print or an interpreter.",
            False,
        ),
        (
            "6. Do not add, copy or delete rows, and do not change names or NHS numbers. recruit checks "
            "every row against the search and refuses a sheet that does not match. Sorting and "
            "filtering are fine.",
            False,
        ),
        (
            "7. Save the file as .xlsx and give it back to the person who runs recruit. They record "
            'the decisions with: recruit review import FILE --reviewer "Dr Name"',
            False,
        ),
        (
            "You can send the sheet back more than once: new decisions are added and changed ones "
            "updated. An empty Decision never removes an earlier one; to change your mind, choose the "
            "other decision. Once a letter has been written, the decision cannot be changed here.",
            False,
        ),
        ("", False),
        ("What the columns say", True),
        ("Why on the list: the record (code, term and date) that met each part of the search.", False),
        (
            "Latest work, fit note or benefit record: the most recent record of any date that says "
            "whether the person is working.",
            False,
        ),
        ("Score made up of: the pieces of out-of-work evidence that add up to the score.", False),
        ("", False),
        ("Reasons not to invite", True),
        *((f"- {label}", False) for label in REASONS.values()),
        ("", False),
        (
            "The research team only ever sees numbers (how many were invited, and how many were not "
            "for each reason). Names and your notes stay in the practice.",
            False,
        ),
    ]
    for r, (text, bold) in enumerate(lines, 1):
        cell = sheet.cell(r, 1)
        put_text(cell, text)
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        if bold:
            cell.font = Font(bold=True, size=13 if r == 1 else 11)
    sheet.column_dimensions["A"].width = 110


# --- import --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SheetRow:
    number: int
    run_id: int
    patient_id: int
    nhs_digits: str
    decision: str | None
    reason: str | None
    detail: str | None


@dataclass
class ImportSummary:
    """What an import did, and where the whole run's review stands afterwards."""

    run_id: int
    rows: int = 0
    recorded: int = 0
    changed: int = 0
    unchanged: int = 0
    blank_kept_earlier: int = 0
    candidates: int = 0
    invite: int = 0
    not_invited: dict[str, int] = field(default_factory=dict)  # reason label -> count
    not_reviewed: int = 0
    not_in_sheet: int = 0


class ReviewSheetError(RecruitError):
    """The sheet does not match its run; nothing was recorded."""


def _words(value: Any) -> str:
    return " ".join(str(value).split()).lower() if value is not None else ""


_DECISION_BY_WORDS = {label.lower(): code for code, label in DECISIONS.items()}
_REASON_BY_WORDS = {label.lower(): code for code, label in REASONS.items()}


def _text_value(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_review_sheet(path: Path) -> tuple[int, list[_SheetRow], list[tuple[int, str]]]:
    """The run the sheet belongs to, its decided and undecided rows, and row problems found
    without the database (row number, problem)."""
    wb = open_workbook(path, what="review workbook")
    if SHEET not in wb.sheetnames or META not in wb.sheetnames:
        raise ReviewSheetError(
            f"{path.name} is not a review sheet made by `recruit review export` "
            f"(it has no '{SHEET}' sheet or its hidden details are missing)."
        )
    meta = {str(r[0].value): r[1].value for r in wb[META].iter_rows(max_col=2) if r[0].value}
    if meta.get("format") != FORMAT or not str(meta.get("run", "")).isdigit():
        raise ReviewSheetError(
            f"{path.name} is not a review sheet made by this version of `recruit review export`."
        )
    sheet_run = int(meta["run"])
    ws = wb[SHEET]
    header = [c.value for c in next(ws.iter_rows(min_row=1, max_row=1), ())]
    cols = match_headers(header, IMPORT_HEADERS, f"{path.name}, sheet {SHEET}")
    rows: list[_SheetRow] = []
    problems: list[tuple[int, str]] = []
    for cells in ws.iter_rows(min_row=2):
        if not cells:
            continue
        number = cells[0].row

        def cell(name: str, cells: Sequence[Any] = cells) -> Any:
            i = cols[name]
            return cells[i] if i < len(cells) else None

        if all(c.value is None or (isinstance(c.value, str) and not c.value.strip()) for c in cells):
            continue
        formulas = [
            str(header[i]) for name, i in cols.items() if (c := cell(name)) is not None and c.data_type == "f"
        ]
        if formulas:
            problems.append((number, f"the {', '.join(formulas)} cell holds a formula; type or pick a value"))
            continue
        key = _text_value(cell("key").value if cell("key") is not None else None)
        m = re.fullmatch(r"(\d+)-(\d+)", key or "")
        if m is None:
            what = "has no hidden key" if key is None else "has a changed hidden key"
            problems.append(
                (number, f"this row {what}: rows cannot be added or edited outside the yellow columns")
            )
            continue
        nhs = cell("nhs").value if cell("nhs") is not None else None
        decision_words = _words(cell("decision").value if cell("decision") is not None else None)
        reason_words = _words(cell("reason").value if cell("reason") is not None else None)
        detail = _text_value(cell("detail").value if cell("detail") is not None else None)
        decision = _DECISION_BY_WORDS.get(decision_words) if decision_words else None
        reason = _REASON_BY_WORDS.get(reason_words) if reason_words else None
        if decision_words and decision is None:
            problems.append(
                (number, f"the decision must be Invite or Do not invite (or empty), not {decision_words!r}")
            )
        if reason_words and reason is None:
            problems.append((number, f"the reason {reason_words!r} is not one from the list"))
        if decision == "do_not_invite" and not reason_words:
            problems.append((number, "Do not invite needs a reason from the list"))
        if reason == "other" and not detail:
            problems.append(
                (number, "the reason is Other: write the reason in the 'Other reason or note' column")
            )
        if decision == "invite" and reason_words:
            problems.append((number, "a reason is chosen but the decision is Invite: clear one of them"))
        if not decision_words and (reason_words or detail):
            problems.append(
                (number, "a reason or note is given but no decision: choose Invite or Do not invite")
            )
        rows.append(
            _SheetRow(
                number=number,
                run_id=int(m.group(1)),
                patient_id=int(m.group(2)),
                nhs_digits=re.sub(r"\D", "", str(nhs)) if nhs is not None else "",
                decision=decision,
                reason=reason if decision == "do_not_invite" else None,
                detail=detail,
            )
        )
    return sheet_run, rows, problems


def import_review(
    engine: Engine, path: Path | str, reviewer: str, run_id: int | None = None
) -> ImportSummary:
    """Record the decisions in a review sheet; refuses the whole sheet (recording nothing) when
    any row does not match its run, naming the rows."""
    path = Path(path)
    reviewer = " ".join((reviewer or "").split())
    if not reviewer:
        raise RecruitError('Give the name of the GP who reviewed the list: --reviewer "Dr A Smith".')
    if len(reviewer) > 200:
        raise RecruitError("The reviewer's name is longer than 200 characters.")
    sheet_run, rows, problems = read_review_sheet(path)
    if run_id is not None and run_id != sheet_run:
        raise ReviewSheetError(
            f"{path.name} is the review sheet for search run {sheet_run}, not run {run_id}."
        )
    with engine.begin() as conn:
        run = conn.execute(select(RUN).where(RUN.c.id == sheet_run)).one_or_none()
        if run is None:
            raise ReviewSheetError(
                f"{path.name} is for search run {sheet_run}, which is not in this database "
                "(is this the right database?)."
            )
        problems += _match_rows(conn, run, rows)
        if problems:
            problems.sort()
            shown = [f"  row {n}: {what}" for n, what in problems[:MAX_LISTED]]
            if len(problems) > MAX_LISTED:
                shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
            raise ReviewSheetError(
                f"{path.name} was not imported (nothing was recorded): "
                f"{len(problems)} problem(s) in the {SHEET} sheet.\n" + "\n".join(shown)
            )
        summary = _record(conn, run, rows, reviewer, path.name)
        _fill_totals(conn, sheet_run, summary, {r.patient_id for r in rows})
    return summary


def _match_rows(conn: Connection, run: Any, rows: Sequence[_SheetRow]) -> list[tuple[int, str]]:
    """Rows that do not belong to this run's candidate list, or that a letter makes final."""
    problems: list[tuple[int, str]] = []
    pids = sorted({r.patient_id for r in rows})
    results = {
        r.patient_id: r
        for r in _in_chunks(
            conn,
            pids,
            lambda chunk: select(RESULT.c.patient_id, RESULT.c.outcome, RESULT.c.excluding_step).where(
                RESULT.c.run_id == run.id, RESULT.c.patient_id.in_(chunk)
            ),
        )
    }
    patients = {
        p.id: p
        for p in _in_chunks(
            conn,
            pids,
            lambda chunk: select(PATIENT.c.id, PATIENT.c.nhs_number).where(PATIENT.c.id.in_(chunk)),
        )
    }
    existing = _existing(conn, run.id)
    invited = _invited(conn, run, [p for p in patients.values()])
    first_row: dict[int, int] = {}
    for r in rows:
        if r.run_id != run.id:
            problems.append(
                (r.number, f"this row belongs to search run {r.run_id}, not run {run.id} (sheets were mixed)")
            )
            continue
        if r.patient_id in first_row:
            problems.append(
                (r.number, f"the same person as row {first_row[r.patient_id]} (a row was copied)")
            )
            continue
        first_row[r.patient_id] = r.number
        patient = patients.get(r.patient_id)
        result = results.get(r.patient_id)
        if patient is None:
            problems.append((r.number, "no such patient in this database (the hidden key was changed)"))
            continue
        if result is None:
            problems.append((r.number, f"this person is not in search run {run.id}"))
            continue
        if result.outcome != "candidate":
            problems.append(
                (
                    r.number,
                    f"this person is not a candidate in search run {run.id} "
                    f"(left out at step {result.excluding_step})",
                )
            )
            continue
        if r.nhs_digits != re.sub(r"\D", "", patient.nhs_number or ""):
            problems.append((r.number, "the NHS number was changed: it does not match this person's record"))
            continue
        before = existing.get(r.patient_id)
        if (
            r.decision is not None
            and before is not None
            and r.patient_id in invited
            and (before.decision, before.reason_code, before.reason_text) != (r.decision, r.reason, r.detail)
        ):
            problems.append(
                (r.number, "a letter has already been written to this person, so the decision cannot change")
            )
    return problems


def _in_chunks(conn: Connection, ids: Sequence[int], query) -> list[Any]:  # type: ignore[no-untyped-def]
    """Rows for many ids without one enormous IN list (SQLite limits bound parameters)."""
    out: list[Any] = []
    for i in range(0, len(ids), 500):
        out.extend(conn.execute(query(list(ids[i : i + 500]))).all())
    return out


def _existing(conn: Connection, run_id: int) -> dict[int, Any]:
    return {
        d.patient_id: d
        for d in conn.execute(
            select(
                DECISION.c.id,
                DECISION.c.patient_id,
                DECISION.c.decision,
                DECISION.c.reason_code,
                DECISION.c.reason_text,
            ).where(DECISION.c.run_id == run_id)
        )
    }


def _invited(conn: Connection, run: Any, patients: Iterable[Any]) -> set[int]:
    """Which of these patients already have an invitation for the run's study (or from the run),
    matched by patient or by NHS number like the search's already_invited."""
    patients = list(patients)
    by_number: dict[str, set[int]] = {}
    for p in patients:
        if p.nhs_number:
            by_number.setdefault(p.nhs_number, set()).add(p.id)
    ids = [p.id for p in patients]
    numbers = list(by_number)
    scope = (
        INVITATION.c.study_id == run.study_id if run.study_id is not None else INVITATION.c.run_id == run.id
    )
    found: set[int] = set()
    for i in range(0, len(ids), 500):
        query = select(INVITATION.c.patient_id).where(scope, INVITATION.c.patient_id.in_(ids[i : i + 500]))
        found.update(conn.execute(query).scalars())
    for i in range(0, len(numbers), 500):
        query = select(INVITATION.c.nhs_number).where(
            scope, INVITATION.c.nhs_number.in_(numbers[i : i + 500])
        )
        for number in conn.execute(query).scalars():
            found |= by_number.get(number, set())
    return found & set(ids)


def _record(
    conn: Connection, run: Any, rows: Sequence[_SheetRow], reviewer: str, source: str
) -> ImportSummary:
    summary = ImportSummary(run_id=run.id, rows=len(rows))
    existing = _existing(conn, run.id)
    now = utcnow()
    new, changed = [], []
    for r in rows:
        before = existing.get(r.patient_id)
        if r.decision is None:
            summary.blank_kept_earlier += before is not None
            continue
        values = {"decision": r.decision, "reason_code": r.reason, "reason_text": r.detail}
        if before is None:
            new.append(
                {
                    "run_id": run.id,
                    "patient_id": r.patient_id,
                    **values,
                    "reviewer": reviewer,
                    "source_file": source,
                    "decided_at": now,
                }
            )
        elif (before.decision, before.reason_code, before.reason_text) == (r.decision, r.reason, r.detail):
            summary.unchanged += 1
        else:
            changed.append(
                {
                    "b_id": before.id,
                    **{f"b_{k}": v for k, v in values.items()},
                    "b_reviewer": reviewer,
                    "b_source": source,
                    "b_at": now,
                }
            )
    if new:
        conn.execute(insert(DECISION), new)
    if changed:
        conn.execute(
            update(DECISION)
            .where(DECISION.c.id == bindparam("b_id"))
            .values(
                decision=bindparam("b_decision"),
                reason_code=bindparam("b_reason_code"),
                reason_text=bindparam("b_reason_text"),
                reviewer=bindparam("b_reviewer"),
                source_file=bindparam("b_source"),
                decided_at=bindparam("b_at"),
            ),
            changed,
        )
    summary.recorded, summary.changed = len(new), len(changed)
    return summary


def _fill_totals(conn: Connection, run_id: int, summary: ImportSummary, in_sheet: set[int]) -> None:
    counts = review_counts(conn, run_id)
    summary.candidates = counts["candidates"]
    summary.invite = counts["invite"]
    summary.not_invited = counts["not_invited"]
    summary.not_reviewed = counts["not_reviewed"]
    candidates = set(
        conn.execute(
            select(RESULT.c.patient_id).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
        ).scalars()
    )
    summary.not_in_sheet = len(candidates - in_sheet)


def review_counts(conn: Connection, run_id: int) -> dict[str, Any]:
    """Where a run's review stands: candidates, invite, not invited by reason, not yet reviewed."""
    candidates = conn.execute(
        select(func.count()).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
    ).scalar_one()
    rows = conn.execute(
        select(DECISION.c.decision, DECISION.c.reason_code, func.count())
        .where(DECISION.c.run_id == run_id)
        .group_by(DECISION.c.decision, DECISION.c.reason_code)
    ).all()
    invite = sum(n for d, _, n in rows if d == "invite")
    not_invited: Counter[str] = Counter()
    for d, reason, n in rows:
        if d == "do_not_invite":
            not_invited[REASONS.get(reason or "", reason or "no reason")] += n
    decided = sum(n for _, _, n in rows)
    return {
        "candidates": candidates,
        "invite": invite,
        "not_invited": dict(sorted(not_invited.items(), key=lambda kv: (-kv[1], kv[0]))),
        "not_reviewed": candidates - decided,
    }


def format_import_summary(s: ImportSummary, source: str) -> str:
    """What the import did and where the run's review stands, in words for practice staff."""
    lines = [
        f"Recorded the GP review from {source} for search run {s.run_id}: "
        f"{s.recorded} new decision(s), {s.changed} changed, {s.unchanged} unchanged.",
    ]
    if s.blank_kept_earlier:
        lines.append(
            f"{s.blank_kept_earlier} row(s) were empty here but decided before: the earlier decision stands."
        )
    if s.not_in_sheet:
        lines.append(f"{s.not_in_sheet} candidate(s) of the run were not in this sheet.")
    lines += [
        "",
        f"Search run {s.run_id} now ({s.candidates} candidates):",
        f"  invite:           {s.invite}",
        f"  do not invite:    {sum(s.not_invited.values())}",
    ]
    lines += [f"    {label}: {n}" for label, n in s.not_invited.items()]
    lines.append(f"  not yet reviewed: {s.not_reviewed} (nobody is written to until a GP chooses Invite)")
    return "\n".join(lines)
