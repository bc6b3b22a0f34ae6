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

import contextlib
import datetime as dt
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    bindparam,
    func,
    insert,
    select,
    update,
)

from recruit.errors import RecruitError
from recruit.explain import Explained, day_words, explain_candidates
from recruit.models import (
    utcnow,
)
from recruit.nhs_numbers import for_people as format_nhs_number
from recruit.private_files import make_private, owner_only
from recruit.search_run import NoSuchRun, SearchRun
from recruit.tables import (
    DECISION,
    INVITATION,
    PATIENT,
    PRACTICE,
    RESULT,
    REVIEW_SHEET,
    STUDY,
)
from recruit.work_folders import clean_leftovers, discard, open_folder, staging_path
from recruit.workbook import CellValue, cell_text, match_headers, open_workbook, parse_day, put_text

if TYPE_CHECKING:  # openpyxl is imported when a sheet is written or read
    from openpyxl import Workbook
    from openpyxl.cell import Cell, MergedCell
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

_T = TypeVar("_T")

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
FORMAT = "recruit review sheet 2"
OLD_FORMATS = ("recruit review sheet 1",)
MAX_LISTED = 40  # problems listed in a refusal before "and N more"


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


def row_key(run_id: int, patient_id: int) -> str:
    return f"{run_id}-{patient_id}"


def _run(conn: Connection, run_id: int) -> SearchRun:
    """The run, if it finished: a failed or unfinished run has no list to review."""
    return SearchRun.load(conn, run_id).require_finished("no list to review")


def _candidate_query(run_id: int, practice_id: int | None) -> Select[Any]:
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
    if practice_id is not None:
        query = query.where(RESULT.c.practice_id == practice_id)
    return query


def person_name(title: str | None, given: str | None, family: str | None) -> str:
    """The name as the sheet shows it: 'Ms Jo Bloggs'."""
    return " ".join(p for p in (title, given, family) if p and p.strip())


def _iter_candidates(
    conn: Connection, run_id: int, practice_id: int | None, explained: Explained, today: dt.date
) -> Iterator[CandidateRow]:
    """The candidates (of one practice, or all) in wave order, read as they are written out."""
    for r in conn.execute(_candidate_query(run_id, practice_id)):
        pid = r.patient_id
        address = ", ".join(line.strip() for line in (r.address or "").splitlines() if line.strip())
        yield CandidateRow(
            key=row_key(run_id, pid),
            patient_id=pid,
            rank=r.rank,
            score=r.score,
            name=person_name(r.title, r.given_name, r.family_name),
            date_of_birth=r.date_of_birth,
            nhs_number=format_nhs_number(r.nhs_number),
            address=address,
            postcode=r.postcode or "",
            practice=f"{r.practice_name} ({r.ods_code})",
            why="\n".join(explained.why.get(pid, [])) or explained.missing,
            work=explained.work.get(pid, explained.no_work),
            score_parts=", ".join(explained.score_parts.get(pid, [])),
            check_first="\n".join([*_check_first(r, today), *explained.check_first.get(pid, [])]),
        )


def candidate_rows(
    engine: Engine, run_id: int, today: dt.date | None = None, practice_id: int | None = None
) -> list[CandidateRow]:
    """The run's candidates (of one practice, when given) in wave order, with their evidence in words."""
    today = today or dt.date.today()
    with engine.begin() as conn:
        run = _run(conn, run_id)
        explained = explain_candidates(conn, run, practice_id)
        return list(_iter_candidates(conn, run_id, practice_id, explained, today))


def _check_first(r: Row[Any], today: dt.date) -> list[str]:
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
    "name": ["Name"],
    "dob": ["Date of birth"],
    "decision": ["Decision"],
    "reason": ["Reason (if not inviting)", "Reason"],
    "detail": ["Other reason or note", "Other reason", "Note"],
}


@dataclass(frozen=True)
class ExportSummary:
    run_id: int
    path: Path
    rows: int
    practice: str | None = None  # the ODS code of the practice the workbook lists


@dataclass(frozen=True)
class _Practice:
    id: int
    ods_code: str
    name: str


def _run_practices(conn: Connection, run_id: int) -> list[_Practice]:
    """The practices the run's candidates belong to (at the time of the search), by ODS code."""
    rows = conn.execute(
        select(PRACTICE.c.id, PRACTICE.c.ods_code, PRACTICE.c.name)
        .where(
            PRACTICE.c.id.in_(
                select(RESULT.c.practice_id).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
            )
        )
        .order_by(PRACTICE.c.ods_code, PRACTICE.c.id)
    ).all()
    return [_Practice(r.id, r.ods_code, r.name) for r in rows]


def _check_out(out: Path | str) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".xlsx":
        raise RecruitError(f"The review workbook must be an .xlsx file, not {out.name}.")
    return out


def practice_path(out: Path, ods_code: str) -> Path:
    """review.xlsx -> review-A81001.xlsx: one workbook per practice, named so staff can tell them apart."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", ods_code)
    return out.with_name(f"{out.stem}-{safe}{out.suffix}")


def export_review(
    engine: Engine,
    run_id: int,
    out: Path | str,
    today: dt.date | None = None,
    practice: str | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write one practice's candidates of the run to an .xlsx workbook for its GPs to screen.

    A GP must only see their own practice's patients, so a run whose candidates span several
    practices needs `practice` (an ODS code), or export_review_by_practice for one file each.
    A long export reports its rows as they are written: progress(rows written, rows in all).
    """
    out = _check_out(out)
    with engine.connect() as conn:
        _run(conn, run_id)
        practices = _run_practices(conn, run_id)
    if practice is None:
        if len(practices) > 1:
            codes = ", ".join(p.ods_code for p in practices)
            raise RecruitError(
                f"Search run {run_id} found candidates at {len(practices)} practices ({codes}). "
                "Each practice's GPs must see only their own patients: give --practice ODS for one "
                "practice's workbook, or leave it out to write one workbook per practice."
            )
        chosen = practices[0] if practices else None
    else:
        wanted = practice.strip().upper()
        chosen = next((p for p in practices if p.ods_code.upper() == wanted), None)
        if chosen is None:
            codes = ", ".join(p.ods_code for p in practices) or "none"
            raise RecruitError(
                f"Search run {run_id} has no candidates at practice {practice.strip()} "
                f"(practices with candidates: {codes})."
            )
    with engine.connect() as conn:
        total = _candidate_count(conn, run_id, chosen.id if chosen is not None else None)
    return _export_one(engine, run_id, out, chosen, today or dt.date.today(), _Counter(progress, total))


def export_review_by_practice(
    engine: Engine,
    run_id: int,
    out: Path | str,
    today: dt.date | None = None,
    progress: Progress | None = None,
) -> list[ExportSummary]:
    """One workbook per practice with candidates (review.xlsx -> review-A81001.xlsx, ...); with one
    practice (or none), exactly `out`. Each practice is read and written on its own, so memory
    stays that of the largest practice however big the region. progress(rows written, rows in
    all) counts over every workbook."""
    out = _check_out(out)
    with engine.connect() as conn:
        _run(conn, run_id)
        practices = _run_practices(conn, run_id)
        counter = _Counter(progress, _candidate_count(conn, run_id, None))
    today = today or dt.date.today()
    if len(practices) <= 1:
        return [_export_one(engine, run_id, out, practices[0] if practices else None, today, counter)]
    return [_export_one(engine, run_id, practice_path(out, p.ods_code), p, today, counter) for p in practices]


Progress = Callable[[int, int], None]
PROGRESS_EVERY = 100  # rows between progress reports


class _Counter:
    """Rows written across one export's workbooks, reported to the caller's progress callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def row(self) -> None:
        self.done += 1
        if self.progress is not None and self.done % PROGRESS_EVERY == 0:
            self.progress(self.done, self.total)

    def finished(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)


def _candidate_count(conn: Connection, run_id: int, practice_id: int | None) -> int:
    count = select(func.count()).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
    if practice_id is not None:
        count = count.where(RESULT.c.practice_id == practice_id)
    return int(conn.execute(count).scalar_one())


def _export_one(
    engine: Engine,
    run_id: int,
    out: Path,
    practice: _Practice | None,
    today: dt.date,
    counter: _Counter | None = None,
) -> ExportSummary:
    """Write the workbook into a private staging folder beside `out` (registered, so the next
    command deletes it if this one is killed), record the sheet, then move the workbook into
    place: a failed or killed export never leaves a workbook, whole or half, behind."""
    token = str(uuid.uuid4())
    exported_at = utcnow()  # before reading: a decision recorded from now on is newer than the sheet
    folder = out.parent
    if not folder.is_dir():
        raise RecruitError(f"Cannot write {out}: there is no folder {folder}.")
    clean_leftovers(engine)
    practice_id = practice.id if practice is not None else None
    try:
        staging = open_folder(engine, staging_path(out, token[:8]), "review")
    except OSError as exc:
        raise RecruitError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    temp = staging.path / out.name
    try:
        with engine.begin() as conn:
            # Each practice's evidence queries name their own temporary tables, so caching their
            # compiled SQL only fills memory as a region's practices go by.
            conn.execution_options(compiled_cache=None)
            run = _run(conn, run_id)
            study = None
            if run.study_id is not None:
                study = conn.execute(select(STUDY.c.title).where(STUDY.c.id == run.study_id)).scalar()
            expected = _candidate_count(conn, run_id, practice_id)
            explained = explain_candidates(conn, run, practice_id)
            rows = _iter_candidates(conn, run_id, practice_id, explained, today)
            meta = {
                "format": FORMAT,
                "run": str(run_id),
                "practice": practice.ods_code if practice is not None else "",
                "sheet": token,
                "exported": exported_at.isoformat(),
            }
            with owner_only():
                written = _write_workbook(
                    temp, run, study, practice, meta, expected, rows, counter or _Counter(None, expected)
                )
            make_private(temp)
            conn.execute(
                insert(REVIEW_SHEET).values(
                    token=token, run_id=run_id, practice_id=practice_id, exported_at=exported_at, rows=written
                )
            )
        os.replace(temp, out)
    except OSError as exc:
        raise RecruitError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    finally:
        discard(engine, staging)
    return ExportSummary(run_id, out, written, practice.ods_code if practice is not None else None)


def _write_workbook(
    path: Path,
    run: SearchRun,
    study: str | None,
    practice: _Practice | None,
    meta: Mapping[str, str],
    expected: int,
    rows: Iterable[CandidateRow],
    counter: _Counter,
) -> int:
    """Stream the rows into a write-only workbook (rows go to disk as they are made); the number
    of rows written."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    try:
        return _fill_workbook(wb, path, run, study, practice, meta, expected, rows, counter)
    except BaseException:
        # Finish the half-written sheets' streams now, while their files are open (else they
        # complain when garbage-collected); the caller removes the file.
        for ws in wb.worksheets:
            with contextlib.suppress(Exception):
                stream = getattr(ws, "_rows", None)  # openpyxl's write-only stream (private)
                if stream is not None:
                    stream.close()
        raise


def _fill_workbook(
    wb: Workbook,
    path: Path,
    run: SearchRun,
    study: str | None,
    practice: _Practice | None,
    meta: Mapping[str, str],
    expected: int,
    rows: Iterable[CandidateRow],
    counter: _Counter,
) -> int:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    guide = wb.create_sheet(INSTRUCTIONS)
    sheet = wb.create_sheet(SHEET)
    lists = wb.create_sheet(LISTS)
    hidden = wb.create_sheet(META)

    def text(ws: WriteOnlyWorksheet, value: str | None, **style: Font | PatternFill | Alignment) -> Cell:
        cell = WriteOnlyCell(ws)
        put_text(cell, value)
        for name, v in style.items():
            setattr(cell, name, v)
        return cell

    # Lists for the dropdowns (an inline list is limited to 255 characters in Excel).
    labels = (list(DECISIONS.values()), list(REASONS.values()))
    for i in range(max(len(x) for x in labels)):
        lists.append([text(lists, x[i]) if i < len(x) else None for x in labels])
    lists.sheet_state = "hidden"
    lists.protection.sheet = True

    header_fill = PatternFill("solid", fgColor="D9D9D9")
    edit_fill = PatternFill("solid", fgColor="FFF2CC")
    top = Alignment(vertical="top")
    top_wrap = Alignment(vertical="top", wrap_text=True)
    unlocked = Protection(locked=False)
    # Column widths, the hidden key and the frozen header go before the first row in write-only mode.
    for c, col in enumerate(COLUMNS, 1):
        sheet.column_dimensions[get_column_letter(c)].width = col.width
    sheet.column_dimensions["A"].hidden = True
    sheet.freeze_panes = "E2"
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    bold = Font(bold=True)
    sheet.append(
        [
            text(
                sheet,
                col.header,
                font=bold,
                fill=edit_fill if col.editable else header_fill,
                alignment=top_wrap,
            )
            for col in COLUMNS
        ]
    )
    dob_col = HEADERS["Date of birth"] - 1
    n = 0
    for row in rows:
        values: list[str | int | float | dt.date | None] = [
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
        cells = []
        for c, value in enumerate(values):
            align = top_wrap if COLUMNS[c].wrap else top
            if isinstance(value, str):
                cells.append(text(sheet, value, alignment=align))
            else:
                cell = WriteOnlyCell(sheet)
                cell.value = value  # as WriteOnlyCell(sheet, value) does; its stub leaves out dates
                cell.alignment = align
                if c == dob_col:
                    cell.number_format = "DD/MM/YYYY"
                cells.append(cell)
        for col in COLUMNS[len(values) :]:
            cell = WriteOnlyCell(sheet)
            cell.protection = unlocked
            cell.fill = edit_fill
            cell.alignment = top_wrap if col.wrap else top
            cells.append(cell)
        sheet.append(cells)
        n += 1
        counter.row()
    if n != expected:  # pragma: no cover - the count and the rows are read in one transaction
        raise RecruitError("The candidates changed while the workbook was being written. Export again.")
    last = n + 1
    if n:
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
        sheet.data_validations.append(pick_decision)
        sheet.data_validations.append(pick_reason)
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{last}"
    # Protected without a password, against accidental edits: only the yellow columns change.
    # Sorting, filtering and resizing stay allowed (rows are matched by their hidden key and
    # checked against the name, date of birth and NHS number shown).
    sheet.protection.sheet = True
    sheet.protection.sort = False
    sheet.protection.autoFilter = False
    sheet.protection.formatColumns = False
    sheet.protection.formatRows = False
    sheet.print_title_rows = "1:1"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = "9"  # A4 (Worksheet.PAPERSIZE_A4)
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0

    for name, value in {**meta, "rows": str(n)}.items():
        hidden.append([text(hidden, name), text(hidden, value)])
    hidden.sheet_state = "veryHidden"
    hidden.protection.sheet = True

    guide.column_dimensions["A"].width = 110
    for r, (line, strong) in enumerate(_instructions(run, study, practice, n), 1):
        font = Font(bold=True, size=13 if r == 1 else 11) if strong else None
        cell = text(guide, line, alignment=Alignment(wrap_text=True, vertical="top"))
        if font is not None:
            cell.font = font
        guide.append([cell])
    wb.save(path)
    counter.finished()
    return n


def _instructions(
    run: SearchRun, study: str | None, practice: _Practice | None, n: int
) -> list[tuple[str, bool]]:
    what = study or run.rule_set_name
    where = f" at {practice.name} ({practice.ods_code})" if practice is not None else ""
    return [
        (f"GP screening list: search run {run.id}", True),
        (
            f"{n} people{where} found by the {run.rule_set_name} search (version {run.rule_set_version}), "
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
            "6. Do not add, copy or delete rows, and do not change names, dates of birth or NHS numbers. "
            "recruit checks every row against the search and the person it was made for. To sort, sort "
            "whole rows (select the whole sheet first): a row whose name, date of birth or NHS number "
            "no longer belongs to its person is not recorded.",
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
            "other decision. A decision recorded from another sheet after this one was made is never "
            "overwritten from this sheet: export a new sheet to change it. Once a letter has been "
            "written, the decision cannot be changed here.",
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


# --- import --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SheetRow:
    number: int
    run_id: int
    patient_id: int
    nhs_digits: str
    name: CellValue  # as typed in the sheet; same_name compares it
    date_of_birth: CellValue  # as typed in the sheet; parse_day reads it
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
    practice: str | None = None  # the sheet's practice (ODS code)
    # Rows not recorded, each with why (row number, reason): a row not the person its key names,
    # of another practice, or older than a decision made since. The other rows are recorded.
    refused_rows: list[tuple[int, str]] = field(default_factory=list)


class ReviewSheetError(RecruitError):
    """The sheet does not match its run; nothing was recorded."""


def _words(value: object) -> str:
    return " ".join(str(value).split()).lower() if value is not None else ""


_DECISION_BY_WORDS = {label.lower(): code for code, label in DECISIONS.items()}
_REASON_BY_WORDS = {label.lower(): code for code, label in REASONS.items()}


def _text_value(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def same_name(shown: object, name: str) -> bool:
    """The Name cell against the name exported for the person: spaces and case do not matter."""

    def norm(value: object) -> str:
        return " ".join(cell_text(str(value)).split()).casefold() if value is not None else ""

    return norm(shown) == norm(name)


@dataclass(frozen=True)
class _SheetMeta:
    run_id: int
    token: str
    practice: str


def read_review_sheet(path: Path) -> tuple[_SheetMeta, list[_SheetRow], list[tuple[int, str]]]:
    """The sheet's hidden details, its decided and undecided rows, and row problems found without
    the database (row number, problem)."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in (".xlsx", ".xlsm"):
        kind = f"a {suffix[1:].upper()} file" if suffix else "not an Excel workbook"
        raise ReviewSheetError(
            f"{path.name} is {kind}. Import the Excel workbook (.xlsx) that `recruit review export` "
            "wrote, with the GP's decisions in it. A copy saved as CSV or in another format loses the "
            "hidden details recruit checks each row against, so it cannot be imported: if the GP saved "
            "one, open the .xlsx, enter the decisions there and save it as .xlsx."
        )
    wb = open_workbook(path, what="review workbook")
    if SHEET not in wb.sheetnames or META not in wb.sheetnames:
        raise ReviewSheetError(
            f"{path.name} is not a review sheet made by `recruit review export` "
            f"(it has no '{SHEET}' sheet or its hidden details are missing)."
        )
    meta = {str(r[0].value): r[1].value for r in wb[META].iter_rows(max_col=2) if r[0].value}
    if meta.get("format") in OLD_FORMATS:
        raise ReviewSheetError(
            f"{path.name} was made by an earlier version of recruit, which did not record when the "
            "sheet was made, so newer decisions could not be protected from it. Nothing was recorded: "
            "export a new sheet (recruit review export) and enter the decisions there."
        )
    if meta.get("format") != FORMAT or not str(meta.get("run", "")).isdigit() or not meta.get("sheet"):
        raise ReviewSheetError(
            f"{path.name} is not a review sheet made by this version of `recruit review export`."
        )
    sheet_meta = _SheetMeta(int(str(meta["run"])), str(meta["sheet"]), str(meta.get("practice") or ""))
    ws = wb[SHEET]
    header = [c.value for c in next(ws.iter_rows(min_row=1, max_row=1), ())]
    cols = match_headers(header, IMPORT_HEADERS, f"{path.name}, sheet {SHEET}")
    rows: list[_SheetRow] = []
    problems: list[tuple[int, str]] = []
    for number, cells in enumerate(ws.iter_rows(min_row=2), 2):  # rows run on from row 2, none skipped
        if not cells:
            continue

        def value(name: str, cells: Sequence[Cell | MergedCell] = cells) -> CellValue:
            i = cols[name]
            return cells[i].value if i < len(cells) else None

        if all(c.value is None or (isinstance(c.value, str) and not c.value.strip()) for c in cells):
            continue
        formulas = [str(header[i]) for i in cols.values() if i < len(cells) and cells[i].data_type == "f"]
        if formulas:
            problems.append((number, f"the {', '.join(formulas)} cell holds a formula; type or pick a value"))
            continue
        key = _text_value(value("key"))
        m = re.fullmatch(r"(\d+)-(\d+)", key or "")
        if m is None:
            what = "has no hidden key" if key is None else "has a changed hidden key"
            problems.append(
                (number, f"this row {what}: rows cannot be added or edited outside the yellow columns")
            )
            continue
        nhs = value("nhs")
        decision_words = _words(value("decision"))
        reason_words = _words(value("reason"))
        detail = _text_value(value("detail"))
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
                name=value("name"),
                date_of_birth=value("dob"),
                decision=decision,
                reason=reason if decision == "do_not_invite" else None,
                detail=detail,
            )
        )
    return sheet_meta, rows, problems


def import_review(
    engine: Engine, path: Path | str, reviewer: str, run_id: int | None = None
) -> ImportSummary:
    """Record the decisions in a review sheet.

    A sheet that does not match its run (changed keys, copied rows, rows of another run, words
    not from the lists, formulas) is refused whole, naming the rows: it has been tampered with.
    A row that no longer shows the person its key names (one column sorted on its own), or is of
    another practice, or would override a decision made since the sheet was exported, is not
    recorded and is listed in refused_rows; the other rows are recorded.
    """
    path = Path(path)
    reviewer = " ".join((reviewer or "").split())
    if not reviewer:
        raise RecruitError('Give the name of the GP who reviewed the list: --reviewer "Dr A Smith".')
    if len(reviewer) > 200:
        raise RecruitError("The reviewer's name is longer than 200 characters.")
    meta, rows, problems = read_review_sheet(path)
    if run_id is not None and run_id != meta.run_id:
        raise ReviewSheetError(
            f"{path.name} is the review sheet for search run {meta.run_id}, not run {run_id}."
        )
    with engine.begin() as conn:
        try:
            run = SearchRun.load(conn, meta.run_id)
        except NoSuchRun:
            raise ReviewSheetError(
                f"{path.name} is for search run {meta.run_id}, which is not in this database "
                "(is this the right database?)."
            ) from None
        sheet = conn.execute(select(REVIEW_SHEET).where(REVIEW_SHEET.c.token == meta.token)).one_or_none()
        if sheet is not None and sheet.run_id != run.id:
            raise ReviewSheetError(
                f"{path.name} belongs to search run {sheet.run_id} in this database, but its hidden "
                f"details name run {run.id}: they were changed. Nothing was recorded: export a new sheet."
            )
        if sheet is not None and meta.practice != _sheet_practice(conn, sheet.practice_id):
            raise ReviewSheetError(
                f"{path.name} was exported for practice {_sheet_practice(conn, sheet.practice_id) or 'all'}, "
                f"but its hidden details name {meta.practice or 'all practices'}: they were changed. "
                "Nothing was recorded: export a new sheet."
            )
        if sheet is None:
            raise ReviewSheetError(
                f"{path.name} was not exported from this database, or its hidden details were changed, "
                "so it cannot be checked against newer decisions. Nothing was recorded: is this the "
                "right database? If it is, export a new sheet."
            )
        checked = _match_rows(conn, run, sheet, rows)
        if len(rows) >= STRANGERS_MIN and checked.strangers == len(rows):
            # Not one row shows its person: one sentence, not a line for every row.
            raise ReviewSheetError(
                f"{path.name} was not imported (nothing was recorded): none of its {len(rows):,} rows "
                f"match the candidates of search run {run.id} in this database. The sheet belongs to "
                "another search run, practice or database, or the practice's records were loaded again "
                "since it was exported. Check you are using the right database (--db); if you are, "
                "export a new sheet."
            )
        problems += checked.problems
        if problems:
            problems.sort()
            shown = [f"  row {n}: {what}" for n, what in problems[:MAX_LISTED]]
            if len(problems) > MAX_LISTED:
                shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
            raise ReviewSheetError(
                f"{path.name} was not imported (nothing was recorded): "
                f"{len(problems)} problem(s) in the {SHEET} sheet.\n" + "\n".join(shown)
            )
        summary = _record(conn, run, sheet, checked.to_record, reviewer, path.name, checked.existing)
        summary.rows = len(rows)
        summary.refused_rows = sorted(checked.refused)
        summary.practice = meta.practice or None
        _fill_totals(conn, run.id, sheet.practice_id, summary, {r.patient_id for r in rows})
    return summary


class _Patient(NamedTuple):
    """Who a sheet row's hidden key names, as recorded (to check the row still shows them)."""

    id: int
    nhs_number: str | None
    title: str | None
    given_name: str | None
    family_name: str | None
    date_of_birth: dt.date | None


class _Result(NamedTuple):
    """The search's result for a sheet row's person."""

    patient_id: int
    outcome: str
    excluding_step: str | None
    practice_id: int


class _Decision(NamedTuple):
    """A decision already recorded for the run (a newer one is not overwritten by an older sheet)."""

    id: int
    patient_id: int
    decision: str
    reason_code: str | None
    reason_text: str | None
    reviewer: str
    decided_at: dt.datetime
    sheet_id: int | None


@dataclass
class _Checked:
    problems: list[tuple[int, str]] = field(default_factory=list)  # refuse the whole sheet
    refused: list[tuple[int, str]] = field(default_factory=list)  # these rows are not recorded
    to_record: list[_SheetRow] = field(default_factory=list)
    existing: dict[int, _Decision] = field(default_factory=dict)
    strangers: int = 0  # rows whose key names nobody, or someone else, in this run's candidates


STRANGERS_MIN = 3  # a sheet of this many rows or more, none of them matching, is said to be foreign


def _sheet_practice(conn: Connection, practice_id: int | None) -> str:
    """The ODS code a sheet was exported for ('' for all practices), as written in its details."""
    if practice_id is None:
        return ""
    return conn.execute(select(PRACTICE.c.ods_code).where(PRACTICE.c.id == practice_id)).scalar() or ""


NOT_THE_PERSON = (
    "{what} in this row {verb} not {whose} of the person this row was made for: was one column "
    "sorted on its own? Nothing from this row was recorded (sort whole rows, or export a new sheet)"
)


def _identity_problem(r: _SheetRow, patient: _Patient) -> str | None:
    """Whether the row still shows the person its hidden key names; words saying what differs."""
    differ = []
    if not same_name(r.name, person_name(patient.title, patient.given_name, patient.family_name)):
        differ.append("name")
    if parse_day(r.date_of_birth) != patient.date_of_birth:
        differ.append("date of birth")
    if r.nhs_digits != re.sub(r"\D", "", patient.nhs_number or ""):
        differ.append("NHS number")
    if not differ:
        return None
    if len(differ) == 1:
        return NOT_THE_PERSON.format(what=f"the {differ[0]}", verb="is", whose=f"the {differ[0]}")
    what = "the " + ", ".join(differ[:-1]) + " and " + differ[-1]
    return NOT_THE_PERSON.format(what=what, verb="are", whose="those")


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back times without a zone; recruit stores them in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _decision_words(d: _Decision) -> str:
    words = DECISIONS.get(d.decision, d.decision)
    if d.decision == "do_not_invite" and d.reason_code:
        words += f": {REASONS.get(d.reason_code, d.reason_code)}"
    return words


def _match_rows(conn: Connection, run: SearchRun, sheet: Row[Any], rows: Sequence[_SheetRow]) -> _Checked:
    """Sort the rows into: problems that refuse the sheet (it does not belong to this run's
    candidate list, or a letter makes a decision final), rows not recorded (not the person shown,
    another practice's patient, older than a decision made since), and rows to record."""
    checked = _Checked()
    pids = sorted({r.patient_id for r in rows})
    results = {
        r.patient_id: r
        for r in _in_chunks(
            conn,
            pids,
            lambda chunk: select(
                RESULT.c.patient_id, RESULT.c.outcome, RESULT.c.excluding_step, RESULT.c.practice_id
            ).where(RESULT.c.run_id == run.id, RESULT.c.patient_id.in_(chunk)),
            _Result,
        )
    }
    patients = {
        p.id: p
        for p in _in_chunks(
            conn,
            pids,
            lambda chunk: select(
                PATIENT.c.id,
                PATIENT.c.nhs_number,
                PATIENT.c.title,
                PATIENT.c.given_name,
                PATIENT.c.family_name,
                PATIENT.c.date_of_birth,
            ).where(PATIENT.c.id.in_(chunk)),
            _Patient,
        )
    }
    keyed_numbers = {re.sub(r"\D", "", p.nhs_number or "") for p in patients.values()}
    existing = checked.existing = _existing(conn, run.id)
    invited = _invited(conn, run, [p for p in patients.values()])
    exported_at = _aware(sheet.exported_at)
    ods = None
    if sheet.practice_id is not None:
        ods = conn.execute(select(PRACTICE.c.ods_code).where(PRACTICE.c.id == sheet.practice_id)).scalar()
    first_row: dict[int, int] = {}
    for r in rows:
        problems = checked.problems
        if r.run_id != run.id:
            checked.strangers += 1
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
        if patient is None or result is None or result.outcome != "candidate":
            checked.strangers += 1
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
        if sheet.practice_id is not None and result.practice_id != sheet.practice_id:
            checked.refused.append(
                (
                    r.number,
                    f"this person is not a patient of this sheet's practice ({ods}): was the row "
                    "copied from another practice's sheet? Nothing from this row was recorded",
                )
            )
            continue
        not_them = _identity_problem(r, patient)
        if not_them is not None:
            if r.nhs_digits not in keyed_numbers:
                # Not a column sorted on its own (that only moves the sheet's own numbers about):
                # the row shows someone none of the sheet's keys name here.
                checked.strangers += 1
            checked.refused.append((r.number, not_them))
            continue
        before = existing.get(r.patient_id)
        differs = (
            r.decision is not None
            and before is not None
            and (before.decision, before.reason_code, before.reason_text) != (r.decision, r.reason, r.detail)
        )
        if (
            differs
            and before is not None
            and before.sheet_id != sheet.id
            and _aware(before.decided_at) > exported_at
        ):
            checked.refused.append(
                (
                    r.number,
                    f"a newer decision ({_decision_words(before)}, by {before.reviewer} on "
                    f"{day_words(_aware(before.decided_at).date())}) was made after this sheet was "
                    "exported; it stands. Export a new sheet to change it",
                )
            )
            continue
        if differs and r.patient_id in invited:
            problems.append(
                (r.number, "a letter has already been written to this person, so the decision cannot change")
            )
            continue
        checked.to_record.append(r)
    return checked


def _in_chunks(
    conn: Connection,
    ids: Sequence[int],
    query: Callable[[Sequence[int]], Select[Any]],
    make: Callable[..., _T],
) -> list[_T]:
    """Rows for many ids without one enormous IN list (SQLite limits bound parameters), each
    made into `make` (its columns in order)."""
    out: list[_T] = []
    for i in range(0, len(ids), 500):
        out.extend(make(*row) for row in conn.execute(query(list(ids[i : i + 500]))))
    return out


def _existing(conn: Connection, run_id: int) -> dict[int, _Decision]:
    rows = conn.execute(
        select(
            DECISION.c.id,
            DECISION.c.patient_id,
            DECISION.c.decision,
            DECISION.c.reason_code,
            DECISION.c.reason_text,
            DECISION.c.reviewer,
            DECISION.c.decided_at,
            DECISION.c.sheet_id,
        ).where(DECISION.c.run_id == run_id)
    )
    return {d.patient_id: d for d in (_Decision(*row) for row in rows)}


def _invited(conn: Connection, run: SearchRun, patients: Iterable[_Patient]) -> set[int]:
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
    conn: Connection,
    run: SearchRun,
    sheet: Row[Any],
    rows: Sequence[_SheetRow],
    reviewer: str,
    source: str,
    existing: Mapping[int, _Decision],
) -> ImportSummary:
    summary = ImportSummary(run_id=run.id, rows=len(rows))
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
                    "sheet_id": sheet.id,
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
                    "b_sheet": sheet.id,
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
                sheet_id=bindparam("b_sheet"),
            ),
            changed,
        )
    summary.recorded, summary.changed = len(new), len(changed)
    return summary


def _fill_totals(
    conn: Connection, run_id: int, practice_id: int | None, summary: ImportSummary, in_sheet: set[int]
) -> None:
    counts = review_counts(conn, run_id)
    summary.candidates = counts["candidates"]
    summary.invite = counts["invite"]
    summary.not_invited = counts["not_invited"]
    summary.not_reviewed = counts["not_reviewed"]
    query = select(RESULT.c.patient_id).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
    if practice_id is not None:  # the sheet's own practice: other practices have their own sheets
        query = query.where(RESULT.c.practice_id == practice_id)
    summary.not_in_sheet = len(set(conn.execute(query).scalars()) - in_sheet)


class ReviewCounts(TypedDict):
    """Where a run's review stands (a dict, as the audit's figures write it out)."""

    candidates: int
    invite: int
    not_invited: dict[str, int]  # reason label -> count
    not_reviewed: int


def review_counts(conn: Connection, run_id: int) -> ReviewCounts:
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
    return ReviewCounts(
        candidates=candidates,
        invite=invite,
        not_invited=dict(sorted(not_invited.items(), key=lambda kv: (-kv[1], kv[0]))),
        not_reviewed=candidates - decided,
    )
