"""`recruit letters RUN`: one wave of GP-approved invitation letters, and its records.

In order: the study settings and templates are checked (a template missing a required element
prints nothing); every patient the run found is classified again against the latest data
(recruit.letters.select); the next wave is taken in rank order; each is given a study number,
a format (large print or easy read when their record asks for it) and a signing GP; patients
who need an interpreter, Braille or another language are listed for the practice instead of
being posted an English letter; the letters are laid out and written (combined PDF, one PDF per
letter, mail-merge CSV and XLSX); and only then are the batch and its invitations recorded, in
the same transaction that read the data. The files appear in the output folder only once that
transaction has committed, so a failure leaves neither files nor records behind.

Issue 15: a record that cannot be printed (too long for the window, characters no printer can
print, a layout error) removes only that letter: it is listed in could-not-print.csv and gets no
invitation. Each person's study number is kept in STUDY_NUMBER, committed before printing, so a
run killed part-way and run again prints the same numbers. The staging folder is registered in
WORK_FOLDER and locked while it is written (recruit.work_folders), so the next command deletes a
killed run's leftovers. Every file in the batch folder is readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, case, func, insert, select, true
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from recruit.codelists import Codelist, codelist_directory, load_codelist
from recruit.db import unavailable
from recruit.errors import RecruitError
from recruit.letters import mailmerge
from recruit.letters.numbers import study_numbers_for
from recruit.letters.pdf import (
    DOES_NOT_FIT,
    LAYOUT_FAILED,
    DetailsTask,
    LetterPages,
    RenderedDoc,
    Stamper,
    chunked,
    lay_out_details,
    mapper,
    process_pool,
    render_html,
)
from recruit.letters.render import (
    GPView,
    Letter,
    LetterTemplates,
    PackKey,
    PatientView,
    PracticeView,
    full_name,
    long_date,
    salutation,
    study_variables,
)
from recruit.letters.select import (
    REFUSALS,
    Candidate,
    classify,
    commonest_usual_gp,
    gps,
    practices,
)
from recruit.letters.study import StudySettings, default_study_file, load_study_settings, store_study
from recruit.models import utcnow
from recruit.nhs_numbers import for_people
from recruit.private_files import make_private_tree, open_private, owner_only
from recruit.query.run import store_codelists
from recruit.search_run import SearchRun
from recruit.tables import BATCH, CODELIST, DECISION, INVITATION, PATIENT, RESULT, STUDY
from recruit.waves import order_wave

CHUNK = 25  # letters per document of patient details (WeasyPrint slows as documents grow)
PRACTICE_CONTACT_FORMATS = ("braille", "interpreter", "language")


@dataclass
class LetterSummary:
    """What a letters run did, in counts only (no patient identifiers)."""

    batch_id: int
    run_id: int
    study_code: str
    output_dir: Path
    letters_written: int = 0
    pages: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    practice_contact: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    left_for_later: int = 0
    draft: bool = True
    # Reason -> how many letters could not be printed (listed in could-not-print.csv).
    could_not_print: dict[str, int] = field(default_factory=dict)


class NobodyApproved(RecruitError):
    """A letters run before any GP has said Invite to anyone on the search run."""


@dataclass(frozen=True)
class _Planned:
    candidate: Candidate
    study_number: str
    letter_format: str  # standard, large_print, easy_read, or a practice-contact need
    practice: PracticeView
    gp: GPView
    patient: PatientView
    need: str = ""


def write_letters(
    engine: Engine,
    run_id: int,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    study_file: str | Path | None = None,
    templates_dir: str | Path | None = None,
    letter_date: dt.date | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> LetterSummary:
    """Write the next wave of letters for a search run into out_dir; the summary of what was done."""
    from recruit import work_folders
    from recruit.letters.check import check_templates

    if limit is not None and limit < 1:
        raise RecruitError("--limit must be at least 1.")
    work_folders.clean_leftovers(engine)
    out = Path(out_dir)
    _check_output_folder(out)
    templates = LetterTemplates(templates_dir)
    with engine.connect() as conn:
        run = SearchRun.load(conn, run_id)
        run_study = None
        if run.study_id is not None:
            run_study = conn.execute(select(STUDY.c.code).where(STUDY.c.id == run.study_id)).scalar()
    run.require_finished()
    _check_not_pseudonymised(engine, run_id)
    _check_someone_approved(engine, run_id)
    study_path = Path(study_file) if study_file else default_study_file(run_study or "instep")
    settings = load_study_settings(study_path)
    if run_study is not None and run_study != settings.code:
        raise RecruitError(
            f"Search run {run_id} was for the study '{run_study}' but {study_path} is for '{settings.code}'."
        )
    opt_out, accessible = _letter_codelists(settings, study_path)
    day = letter_date or dt.date.today()
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    pool = process_pool(workers)
    try:
        check_templates(templates, settings, mapper(pool))
        return _write(engine, run, out, limit, settings, templates, opt_out, accessible, day, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


PSEUDONYMISED_RUN = (
    "This search ran on pseudonymised data (search run {run}): the data provider removed NHS numbers, "
    "names and addresses before the extract was made. It holds no names or addresses, so no letters "
    "can be written; use it for counts, evaluation and the audit report (recruit audit {run})."
)


def _check_not_pseudonymised(engine: Engine, run_id: int) -> None:
    """A run whose patients all come from pseudonymised extracts has nobody to write to: say so
    plainly before anything else (in a mixed run, select.classify leaves those patients out)."""
    with engine.connect() as conn:
        found, pseudonymised = conn.execute(
            select(func.count(), func.count(case((PATIENT.c.pseudonymised == true(), 1))))
            .select_from(RESULT.join(PATIENT, PATIENT.c.id == RESULT.c.patient_id))
            .where(RESULT.c.run_id == run_id)
        ).one()
    if found and pseudonymised == found:
        raise RecruitError(PSEUDONYMISED_RUN.format(run=run_id))


def _check_someone_approved(engine: Engine, run_id: int) -> None:
    """Before any file or record: a run nobody has approved has nothing to print, so say what to do."""
    approved = DECISION.alias("approved")
    with engine.connect() as conn:
        candidates, invites = conn.execute(
            select(func.count(), func.count(approved.c.id))
            .select_from(RESULT)
            .outerjoin(
                approved,
                and_(
                    approved.c.run_id == RESULT.c.run_id,
                    approved.c.patient_id == RESULT.c.patient_id,
                    approved.c.decision == "invite",
                ),
            )
            .where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
        ).one()
    if invites:
        return
    if not candidates:
        raise NobodyApproved(
            f"Search run {run_id} found nobody to invite (0 candidates), so there are no letters to "
            "write. Check the search's counts with: recruit audit " + str(run_id)
        )
    raise NobodyApproved(
        f"Nobody on search run {run_id} has been approved by a GP yet ({candidates:,} candidates, none "
        f"marked Invite), so no letters were written. Export the list for the GP with: recruit review "
        f"export {run_id} --out review.xlsx; when the GP has chosen Invite or Do not invite for each "
        'person, record the decisions with: recruit review import review.xlsx --reviewer "Dr Name"; '
        f"then run recruit letters {run_id} again."
    )


def _write(
    engine: Engine,
    run: SearchRun,
    out: Path,
    limit: int | None,
    settings: StudySettings,
    templates: LetterTemplates,
    opt_out: Codelist,
    accessible: Codelist,
    day: dt.date,
    pool: ProcessPoolExecutor | None,
    progress: Callable[[int], None] | None,
) -> LetterSummary:
    from recruit import work_folders

    run_id = run.id
    # The study and the lists are committed first: study numbers (committed on a connection of
    # their own, before printing) refer to the study.
    try:
        with engine.begin() as conn:
            study_id = store_study(conn, settings)
            stored = store_codelists(conn, {"opt_out": opt_out, "accessible": accessible})
            opt_out_ids = [
                stored["opt_out"],
                *_run_codelist_ids(conn, run, settings.codelists.research_opt_out),
            ]
    except (OperationalError, DBAPIError) as exc:
        raise unavailable(engine, exc) from None

    staging = work_folders.staging_path(out, uuid.uuid4().hex[:8])
    try:
        folder = work_folders.open_folder(engine, staging, "letters")
    except OSError as exc:
        raise RecruitError(
            f"Could not make a folder for the letters in {staging.parent} ({exc.strerror}). Check the "
            "folder exists and you may write in it."
        ) from None
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    committed = False
    try:
        with owner_only(), _connect(engine) as conn, conn.begin():
            found = classify(conn, run_id, study_id, opt_out_ids, [stored["accessible"]])
            refusals = Counter(found.refusals)
            # Who may be written to is decided above; weights fitted to replies (recruit.waves)
            # only change the order in which they are written to.
            ordered, ranking = order_wave(conn, run_id, found.eligible)
            wave = ordered if limit is None else ordered[:limit]
            left_for_later = len(found.eligible) - len(wave)
            numbers = study_numbers_for(
                engine, study_id, settings.number_prefix, [c.nhs_number for c in wave]
            )
            planned = _plan(conn, wave, settings, numbers)
            unprintable = [
                (p, reason)
                for p in planned
                if p.letter_format not in PRACTICE_CONTACT_FORMATS and (reason := _unprintable(p))
            ]
            skipped = {id(p) for p, _ in unprintable}
            printable = [p for p in planned if id(p) not in skipped]
            mailed, failed, pages_info = _print(templates, settings, printable, day, staging, pool, progress)
            failed = unprintable + failed
            could_not_print = Counter(reason for _, reason in failed)
            refusals.update(could_not_print)
            contact = [p for p in printable if p.letter_format in PRACTICE_CONTACT_FORMATS]
            unaddressed = _unaddressed_rows(conn, found.no_address)
            batch_id = conn.execute(
                insert(BATCH)
                .values(
                    run_id=run_id,
                    study_id=study_id,
                    created_at=utcnow(),
                    output_dir=str(out.resolve()),
                    letters_written=len(mailed),
                    refusals=dict(sorted(refusals.items())),
                    ranking=ranking,
                )
                .returning(BATCH.c.id)
            ).scalar_one()
            invited = [*mailed, *contact]
            if invited:
                conn.execute(
                    insert(INVITATION),
                    [
                        {
                            "study_id": study_id,
                            "patient_id": p.candidate.patient_id,
                            "nhs_number": p.candidate.nhs_number,
                            "run_id": run_id,
                            "batch_id": batch_id,
                            "study_number": p.study_number,
                            "letter_format": p.letter_format,
                            "status": "drafted",
                            "created_at": utcnow(),
                        }
                        for p in invited
                    ],
                )
            summary = LetterSummary(
                batch_id=batch_id,
                run_id=run_id,
                study_code=settings.code,
                output_dir=out,
                letters_written=len(mailed),
                pages=sum(n for n, _ in pages_info),
                formats=dict(Counter(p.letter_format for p in mailed)),
                practice_contact=dict(
                    Counter(p.letter_format for p in contact)
                    + Counter({"no_current_address": len(unaddressed)})
                ),
                refusals=dict(sorted(refusals.items())),
                left_for_later=left_for_later,
                draft=settings.status == "draft",
                could_not_print=dict(sorted(could_not_print.items())),
            )
            _write_lists(staging, settings, day, mailed, pages_info, contact, failed, unaddressed)
            _write_summary(staging, summary, settings, templates, day)
            make_private_tree(staging)
            # Committed with the batch: from now on the folder is kept (moved into place), not
            # deleted, even if this process dies before it moves it.
            work_folders.mark_recorded(conn, folder)
        committed = True
        work_folders.unlock(folder)
        try:
            _publish(staging, out)
        except OSError as exc:
            raise RecruitError(
                f"The letters were recorded (batch {summary.batch_id}) but could not be moved to {out} "
                f"({exc.strerror}); they are in {staging}."
            ) from None
        work_folders.release(engine, folder.row_id)
    except IntegrityError:
        raise RecruitError(
            "Another letters run wrote to some of the same people at the same time. Nothing was "
            "written by this one; run it again and those people will be left out."
        ) from None
    except OperationalError as exc:
        raise unavailable(engine, exc) from None
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    finally:
        if not committed:
            work_folders.discard(engine, folder)
    return summary


def _connect(engine: Engine) -> Connection:
    """PostgreSQL reads one snapshot for the whole run, so the checks and inserts agree."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="REPEATABLE READ")
    return engine.connect()


def _check_output_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RecruitError(
            f"{out} already exists and is not an empty folder. Give a new folder for each batch of "
            "letters, so no earlier letters are overwritten."
        )
    parent = out.resolve().parent
    if not parent.is_dir():
        raise RecruitError(f"The folder {parent} does not exist, so {out.name} cannot be made in it.")


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()
    staging.rename(out)


def _letter_codelists(settings: StudySettings, study_path: Path) -> tuple[Codelist, Codelist]:
    # A study file sits in rules/studies/: its rules folder is the one above.
    directory = codelist_directory(study_path, settings.codelist_directory, study_path.parent.parent)
    opt_out = load_codelist(settings.codelists.research_opt_out, directory)
    accessible = load_codelist(settings.codelists.accessible_information, directory)
    return opt_out, accessible


def _run_codelist_ids(conn: Connection, run: SearchRun, name: str) -> list[int]:
    """The research opt-out list the search itself used, if it used one (checked as well)."""
    fingerprint = run.codelist_fingerprints.get(name)
    if not fingerprint:
        return []
    found = conn.execute(
        select(CODELIST.c.id).where(CODELIST.c.name == name, CODELIST.c.fingerprint == fingerprint)
    ).scalar()
    return [found] if found is not None else []


# --- planning each letter ----------------------------------------------------------------------


def _lines(text: str | None) -> tuple[str, ...]:
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def letter_format(c: Candidate) -> str:
    """Braille, an interpreter or another language: the practice arranges it. Else easy read
    (which is also in large type), large print, or the standard letter."""
    if c.needs_braille:
        return "braille"
    if c.needs_interpreter:
        return "interpreter"
    if c.language:
        return "language"
    if c.needs_easy_read:
        return "easy_read"
    if c.needs_large_print:
        return "large_print"
    return "standard"


NEEDS = {
    "braille": "Braille: please send the invitation in Braille or contact them another way",
    "interpreter": "Interpreter needed: please contact them with an interpreter",
    "language": "Main language is not English: please contact them in their language",
    "no_current_address": "No current postal address on record: check it, or contact them another way",
}


# Why a letter could not be printed, and what the practice can do, for could-not-print.csv.
COULD_NOT_PRINT_REASONS = {
    DOES_NOT_FIT: "Name or address too long for the envelope window (or the name for the 'Dear' line): "
    "check and shorten the record",
    "characters_cannot_be_printed": "Name or address holds characters that cannot be printed (such as "
    "control characters): check the record",
    LAYOUT_FAILED: "The letter could not be laid out for printing: check the name and address in the record",
}


def _plan(
    conn: Connection, wave: list[Candidate], settings: StudySettings, numbers: dict[str, str]
) -> list[_Planned]:
    practice_ids = sorted({c.practice_id for c in wave})
    practice_rows = practices(conn, practice_ids)
    gp_rows = gps(conn, practice_ids)
    fallback = commonest_usual_gp(conn, practice_ids)
    planned = []
    for c in wave:
        number = numbers[c.nhs_number]
        prac = practice_rows[c.practice_id]
        practice = PracticeView(
            name=prac.name,
            ods_code=prac.ods_code,
            address_lines=_lines(prac.address),
            postcode=prac.postcode or "",
            telephone=prac.telephone or "",
            email=prac.email or "",
        )
        override = settings.signing_gps.get(prac.ods_code)
        if override is not None:
            gp = GPView(override.name, override.role)
        else:
            gp_id = c.usual_gp_id if c.usual_gp_id in gp_rows else fallback.get(c.practice_id)
            row = gp_rows.get(gp_id) if gp_id is not None else None
            name = full_name(row.title, row.given_name, row.family_name) if row else ""
            if not name:
                raise RecruitError(
                    f"No GP is named to sign the letters of practice {prac.ods_code} ({prac.name}). "
                    f"Add one under signing_gps in the study settings, e.g. {prac.ods_code}: "
                    "{name: Dr A Patel, role: GP partner}."
                )
            gp = GPView(name, (row.role if row else None) or "GP")
        patient = PatientView(
            full_name=full_name(c.title, c.given_name, c.family_name),
            salutation=salutation(c.title, c.given_name, c.family_name),
            address_lines=_lines(c.address),
            postcode=(c.postcode or "").strip().upper(),
        )
        fmt = letter_format(c)
        need = NEEDS.get(fmt, "")
        if fmt == "language":
            need = f"{need} ({c.language})"
        planned.append(_Planned(c, number, fmt, practice, gp, patient, need))
    return planned


# Unicode categories no letter can print faithfully: control characters (a tab or line end
# aside), lone surrogates, private-use and unassigned code points.
_UNPRINTABLE = {"Cc", "Cs", "Co", "Cn"}


def _unprintable(p: _Planned) -> str:
    """Why this letter's details cannot be printed as they are ('' when they can)."""
    texts = (p.patient.full_name, p.patient.salutation, p.patient.postcode, *p.patient.address_lines)
    for text in texts:
        if any(unicodedata.category(ch) in _UNPRINTABLE and ch not in "\t\n\r" for ch in text):
            return "characters_cannot_be_printed"
    return ""


# --- printing ----------------------------------------------------------------------------------


def _print(
    templates: LetterTemplates,
    settings: StudySettings,
    planned: list[_Planned],
    day: dt.date,
    folder: Path,
    pool: ProcessPoolExecutor | None,
    progress: Callable[[int], None] | None,
) -> tuple[list[_Planned], list[tuple[_Planned, str]], list[tuple[int, int]]]:
    """Lay out and write the PDFs; (letters printed, letters that could not be printed with the
    reason, and for each printed letter its page count and first page in the combined PDF).

    The packs are laid out first; then each chunk of letters' details is laid out, and each of
    its letters' own PDF written, in the printing processes, while this process stamps the
    chunks already done into the combined PDF."""
    to_print = [p for p in planned if p.letter_format not in PRACTICE_CONTACT_FORMATS]
    if not to_print:
        return [], [], []
    study = study_variables(settings)
    date_text = long_date(day)
    draft = settings.status == "draft"
    title = f"{settings.short_title} study: invitation letter"  # the title a screen reader announces
    letters = [
        Letter(PackKey(p.letter_format, p.practice, p.gp), p.patient, p.study_number) for p in to_print
    ]
    keys = list(dict.fromkeys(letter.pack for letter in letters))
    pack_html = [
        templates.document([templates.pack_html(k, study, date_text)], draft=draft, title=title) for k in keys
    ]
    pack_docs = list(mapper(pool)(render_html, pack_html))
    for key, doc in zip(keys, pack_docs, strict=True):
        _check_pack(key, doc)
    pack_ids = {key: i for i, key in enumerate(keys)}
    packs = dict(enumerate(pack_docs))
    singles = folder / "letters"
    singles.mkdir()
    chunks = list(chunked(list(enumerate(letters)), CHUNK))
    tasks = []
    for i, chunk in enumerate(chunks):
        fragments = [templates.slots_html(letter, f"l{i}-{j}") for j, (_, letter) in enumerate(chunk)]
        html = templates.document(fragments, draft=False, title=title, slots=True)
        alone = tuple(templates.document([f], draft=False, title=title, slots=True) for f in fragments)
        used = {pack_ids[letter.pack] for _, letter in chunk}
        tasks.append(
            DetailsTask(
                html,
                {k: packs[k] for k in used},
                tuple(
                    (
                        f"l{i}-{j}",
                        pack_ids[letter.pack],
                        letter.study_number,
                        str(singles / f"{letter.study_number}.pdf"),
                    )
                    for j, (_, letter) in enumerate(chunk)
                ),
                alone,
                os.getpid(),
            )
        )
    stamper = Stamper()
    combined = stamper.new_target()
    printed: list[_Planned] = []
    failed: list[tuple[_Planned, str]] = []
    pages_info: list[tuple[int, int]] = []
    page_cursor = 0
    for i, (chunk, done) in enumerate(zip(chunks, mapper(pool)(lay_out_details, tasks), strict=True)):
        for (index, letter), place in zip(chunk, done.placed, strict=True):
            plan = to_print[index]
            if isinstance(place, str):
                failed.append((plan, place))
                continue
            doc_index, first = place
            pack_id = pack_ids[letter.pack]
            details_id = i * (CHUNK + 1) + doc_index  # each laid-out document its own id
            pages = LetterPages(
                packs[pack_id], pack_id, done.docs[doc_index], details_id, first, letter.study_number
            )
            n = stamper.add_letter(combined, pages)
            printed.append(plan)
            pages_info.append((n, page_cursor + 1))
            page_cursor += n
        if progress is not None:
            progress(len(chunk))
    if printed:
        stamper.write(combined, folder / "letters.pdf")
    return printed, failed, pages_info


def _check_pack(key: PackKey, doc: RenderedDoc) -> None:
    slip = doc.page_of("reply-slip")
    if slip is None:
        raise RecruitError(
            'The letter template reply_slip.html.j2 lost id="reply-slip", which recruit needs to find the '
            "reply slip; put it back."
        )
    if slip != doc.page_count - 1:
        raise RecruitError(
            f"The {key.letter_format.replace('_', ' ')} reply slip does not fit on one page (or is not the "
            "last page of the letter). Shorten it in reply_slip.html.j2 or letters.css."
        )


# --- the lists ---------------------------------------------------------------------------------


def _merge_row(p: _Planned, day: dt.date, pages: int, first_page: int) -> dict[str, str | int]:
    c = p.candidate
    address = mailmerge.address_columns(p.patient.address_lines)
    return {
        "StudyNumber": p.study_number,
        "Title": c.title or "",
        "FirstName": c.given_name or "",
        "Surname": c.family_name or "",
        "FullName": p.patient.full_name,
        "Salutation": p.patient.salutation,
        **{f"Address{i + 1}": line for i, line in enumerate(address)},
        "Postcode": p.patient.postcode,
        "PracticeODS": p.practice.ods_code,
        "PracticeName": p.practice.name,
        "GPName": p.gp.name,
        "LetterFormat": p.letter_format,
        "LetterDate": long_date(day),
        "StreamPages1": pages,
        "FirstPage": first_page,
        "PdfFile": f"letters/{p.study_number}.pdf",
    }


def _person_columns(p: _Planned) -> dict[str, str]:
    """Who and where, as the practice's lists show them (NHS number, name, address, practice).
    The NHS number is printed 3-3-4, as people read it; the mail-merge data has no NHS number."""
    c = p.candidate
    address = mailmerge.address_columns(p.patient.address_lines)
    return {
        "NHSNumber": for_people(c.nhs_number),
        "Title": c.title or "",
        "FirstName": c.given_name or "",
        "Surname": c.family_name or "",
        **{f"Address{i + 1}": line for i, line in enumerate(address)},
        "Postcode": p.patient.postcode,
        "PracticeODS": p.practice.ods_code,
    }


def _contact_row(p: _Planned, need: str, study_number: str) -> dict[str, str]:
    return {"StudyNumber": study_number, **_person_columns(p), "WhatIsNeeded": need}


def _unaddressed_rows(conn: Connection, people: list[Candidate]) -> list[dict[str, str]]:
    """The practice's list of approved people with no current postal address (no letter, no
    invitation, so no study number): the practice may check the address or contact them."""
    if not people:
        return []
    ods = {pid: row.ods_code for pid, row in practices(conn, sorted({c.practice_id for c in people})).items()}
    rows = []
    for c in people:
        address = mailmerge.address_columns(_lines(c.address))
        rows.append(
            {
                "StudyNumber": "",
                "NHSNumber": for_people(c.nhs_number),
                "Title": c.title or "",
                "FirstName": c.given_name or "",
                "Surname": c.family_name or "",
                **{f"Address{i + 1}": line for i, line in enumerate(address)},
                "Postcode": (c.postcode or "").strip().upper(),
                "PracticeODS": ods.get(c.practice_id, ""),
                "WhatIsNeeded": NEEDS["no_current_address"],
            }
        )
    return rows


def _write_lists(
    folder: Path,
    settings: StudySettings,
    day: dt.date,
    mailed: list[_Planned],
    pages_info: list[tuple[int, int]],
    contact: list[_Planned],
    failed: Sequence[tuple[_Planned, str]] = (),
    unaddressed: Sequence[dict[str, str]] = (),
) -> None:
    rows = [_merge_row(p, day, n, first) for p, (n, first) in zip(mailed, pages_info, strict=True)]
    mailmerge.write_csv(folder / "mail-merge.csv", mailmerge.MAIL_MERGE_COLUMNS, rows)
    mailmerge.write_xlsx(folder / "mail-merge.xlsx", mailmerge.MAIL_MERGE_COLUMNS, rows, "Letters")
    listed = [_contact_row(p, p.need, p.study_number) for p in contact]
    listed += list(unaddressed)
    mailmerge.write_csv(folder / "contact-another-way.csv", mailmerge.PRACTICE_LIST_COLUMNS, listed)
    # A letter that could not be printed has no invitation: the practice puts the record right,
    # and a later run prints it (with the study number kept for the person).
    problems = [_could_not_print_row(p, reason) for p, reason in failed]
    mailmerge.write_csv(folder / "could-not-print.csv", mailmerge.COULD_NOT_PRINT_COLUMNS, problems)


def _could_not_print_row(p: _Planned, reason: str) -> dict[str, str]:
    why = COULD_NOT_PRINT_REASONS.get(reason, REFUSALS.get(reason, reason))
    return {**_person_columns(p), "WhyNotPrinted": why}


def _write_summary(
    folder: Path, summary: LetterSummary, settings: StudySettings, templates: LetterTemplates, day: dt.date
) -> None:
    """batch.json: what was done and with which wording, in counts only."""
    record = {
        "batch_id": summary.batch_id,
        "search_run": summary.run_id,
        "study": summary.study_code,
        "study_settings_fingerprint": settings.fingerprint(),
        "study_status": settings.status,
        "templates_fingerprint": templates.fingerprint(),
        "letter_date": day.isoformat(),
        "letters_written": summary.letters_written,
        "pages": summary.pages,
        "formats": summary.formats,
        "listed_for_the_practice": summary.practice_contact,
        "not_written_to": summary.refusals,
        "could_not_print": summary.could_not_print,
        "left_for_a_later_wave": summary.left_for_later,
        "created_at": utcnow().isoformat(timespec="seconds"),
    }
    with open_private(folder / "batch.json", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
