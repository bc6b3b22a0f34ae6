"""The whole flow on made-up patients, in one call: what `recruit demo` runs.

A newcomer sees every step work without touching real data: three practices of made-up people
are generated, loaded into a SQLite file, searched with the InSTEP rule set, screened by a
simulated GP (through the same review workbook a real GP fills in), written to, answered by
simulated reply slips, and reported on for the trial manager. The generator's hidden truth
drives the simulated GP and replies, the way a real GP knows who has gone back to work.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl import load_workbook
from sqlalchemy import Engine, func, select

import synthetic_ehr
from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.models import Invitation, ReviewDecision, SearchResult
from recruit.private_files import make_private, make_private_tree, open_private, owner_only, private_folder
from recruit.resources import rules_file

INDEX_DATE = dt.date(2026, 11, 1)  # the made-up extract is taken on this date (its manifest says so)
REVIEWER = "Dr A Demo (simulated review)"
STUDY = "studies/instep.yaml"  # the study's letter settings, under rules/
MARKER = ".recruit-demo"  # a demo folder says so, so a re-run never deletes anything else

Say = Callable[[str], None]


@dataclass
class DemoResult:
    folder: Path
    run_id: int
    candidates: int
    invited: int
    not_invited: int
    letters: int
    replies: int
    outputs: dict[str, Path] = field(default_factory=dict)


def find_rules(name: str = "instep.yaml") -> Path:
    """A file under rules/: ./rules/ if it has one, else the copy recruit comes with."""
    return rules_file(name)


def prepare_folder(folder: Path) -> None:
    """An empty demo folder; an earlier demo's folder is cleared, anything else is refused.

    The folder is owner-only (0700) like every folder recruit fills with patient details: the
    people are made up, but the demo shows the files as a real run makes them."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).is_file():
            raise RecruitError(
                f"{folder} already exists and was not made by recruit demo; choose another with --out."
            )
        shutil.rmtree(folder)
    private_folder(folder, parents=True)
    with open_private(folder / MARKER) as f:
        f.write("Made by recruit demo: made-up patients only. Safe to delete.\n")


def read_truth(truth_csv: Path) -> dict[str, dict[str, str]]:
    with truth_csv.open(newline="", encoding="utf-8") as f:
        return {row["nhs_number"]: row for row in csv.DictReader(f)}


def simulate_gp(sheet: Path, truth: dict[str, dict[str, str]], seed: int) -> Path:
    """Fill in the review workbook as a GP who knows some of their patients might.

    The GP knows about half of those back in work, and now and then has another reason not to
    write (a recent bereavement, a mental health crisis); everyone else is invited.
    """
    from recruit.review import HEADERS, REASONS

    rng = random.Random(seed)
    book = load_workbook(sheet)
    ws = book["Review"]
    nhs_col, decision_col = HEADERS["NHS number"], HEADERS["Decision"]
    reason_col = HEADERS["Reason (if not inviting)"]
    for row in range(2, ws.max_row + 1):
        nhs = str(ws.cell(row, nhs_col).value or "").replace(" ", "")
        if not nhs:
            continue
        person = truth.get(nhs, {})
        reason = None
        if person.get("in_work_at_extract") == "true" and rng.random() < 0.5:
            reason = "in_work_or_retired"
        elif rng.random() < 0.03:
            reason = rng.choice(
                ["recent_bereavement", "mental_health_crisis", "serious_illness_or_in_hospital"]
            )
        if reason:
            ws.cell(row, decision_col).value = "Do not invite"
            ws.cell(row, reason_col).value = REASONS[reason]
        else:
            ws.cell(row, decision_col).value = "Invite"
    decided = sheet.with_name(f"{sheet.stem}-decided.xlsx")
    with owner_only():
        book.save(decided)
    make_private(decided)
    return decided


def simulate_replies(engine: Engine, truth: dict[str, dict[str, str]], out: Path, seed: int) -> int:
    """Reply slips as some of the people written to might send them back (a CSV of study numbers)."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        letters = conn.execute(
            select(Invitation.study_number, Invitation.nhs_number).order_by(Invitation.study_number)
        ).all()
    rows = []
    for study_number, nhs in letters:
        in_work = truth.get(nhs, {}).get("in_work_at_extract") == "true"
        draw = rng.random()
        if in_work and draw < 0.3:
            reply = "now in paid work"
        elif draw < 0.15:
            reply = "interested"
        elif draw < 0.25:
            reply = "not interested"
        elif draw < 0.27:
            reply = "do not contact"
        else:
            continue
        rows.append((study_number, reply, dt.date.today().isoformat()))
    with open_private(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Study number", "Reply", "Date"])
        writer.writerows(rows)
    return len(rows)


def run_demo(
    folder: Path,
    *,
    practices: int = 3,
    patients: int = 3000,
    seed: int = 1,
    say: Say = print,
) -> DemoResult:
    """Every step of recruit on made-up patients, into folder; what was done, in counts."""
    from recruit.audit import Rule, audit
    from recruit.letters.batch import write_letters
    from recruit.query.run import run_search
    from recruit.replies import import_replies
    from recruit.review import export_review_by_practice, import_review

    rules = find_rules()
    prepare_folder(folder)
    extract = folder / "extract"
    say(f"1. Making {practices} practices of made-up patients ({patients:,} people) in {extract}")
    synthetic_ehr.generate(extract, practices=practices, patients=patients, seed=seed, workers=1)
    truth = read_truth(extract / "truth" / "truth.csv")

    engine = make_engine(f"sqlite:///{folder / 'recruit.db'}", create_folder=True)
    try:
        upgrade(engine)
        loaded = load_extract(engine, [extract / "fhir"])
        db_file = folder / "recruit.db"
        say(f"2. Loaded {loaded.loaded:,} records into {db_file} ({loaded.quarantined} quarantined)")

        run_id = run_search(engine, rules, index_date=INDEX_DATE)
        with engine.connect() as conn:
            candidates = conn.execute(
                select(func.count())
                .select_from(SearchResult)
                .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
            ).scalar_one()
        say(f"3. Searched with {rules.name}: search run {run_id} found {candidates:,} people to consider")

        # One workbook per practice: each practice's GP sees only their own patients.
        sheets = private_folder(folder / "review")
        for sheet in export_review_by_practice(engine, run_id, sheets / "review.xlsx"):
            import_review(engine, simulate_gp(sheet.path, truth, seed), REVIEWER, run_id=run_id)
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(ReviewDecision.decision, func.count())
                    .where(ReviewDecision.run_id == run_id)
                    .group_by(ReviewDecision.decision)
                ).all()
            )
        invited, not_invited = counts.get("invite", 0), counts.get("do_not_invite", 0)
        say(f"4. A simulated GP screened the list: {invited:,} to invite, {not_invited:,} not")

        letters = write_letters(
            engine,
            run_id,
            folder / "letters",
            letter_date=INDEX_DATE + dt.timedelta(days=2),
            study_file=find_rules(STUDY),
        )
        where = letters.output_dir
        say(f"5. Wrote {letters.letters_written:,} letters ({letters.pages:,} pages) into {where}")

        replies_file = folder / "replies.csv"
        replies = simulate_replies(engine, truth, replies_file, seed)
        import_replies(engine, replies_file)
        say(f"6. Recorded {replies:,} simulated reply slips ({replies_file.name})")

        audit(engine, [run_id], folder / "audit", Rule())
        say(f"7. Wrote the trial manager's audit report to {folder / 'audit'}")
    finally:
        engine.dispose()
        make_private_tree(folder)
    return DemoResult(
        folder=folder,
        run_id=run_id,
        candidates=candidates,
        invited=invited,
        not_invited=not_invited,
        letters=letters.letters_written,
        replies=replies,
        outputs={
            "database": folder / "recruit.db",
            "review sheets (one per practice)": sheets,
            "letters (print-ready PDF)": letters.output_dir / "letters.pdf",
            "mail-merge file": letters.output_dir / "mail-merge.csv",
            "audit report": folder / "audit" / "audit.html",
        },
    )


def closing_advice(result: DemoResult, command: list[str] | None = None) -> str:
    """What to try next, as commands that work where the demo was run (see recruit.invocation)."""
    from recruit.invocation import quote, recruit_command

    start = command or recruit_command()
    db = f"sqlite:///{(result.folder / 'recruit.db').as_posix()}"
    truth = str(result.folder / "extract" / "truth")
    audit = quote([*start, "audit", str(result.run_id), "--db", db, "--out", "another-report"])
    evaluate = quote([*start, "evaluate", str(result.run_id), "--truth", truth, "--db", db])
    return f"Try: {audit}, or {evaluate}"
