"""Issue 15 case 7: `recruit db copy --replace` never deletes GP decisions, letters or replies
without naming them and being told to, and the README's region flow keeps every letter in sight
of the search's already_invited step.

History is made two ways: written straight into the tables (quick, every engine pair), and by
the real commands on a DuckDB file (search, review, letters, replies), as the README flow does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import Engine, func, insert, select, update

import synthetic_ehr
from recruit.db import make_engine
from recruit.dbcopy import HistoryWouldBeLost, copy_database, history_missing
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.query.run import run_search
from recruit.tables import (
    BATCH,
    DECISION,
    INVITATION,
    PATIENT,
    RESULT,
    REVIEW_SHEET,
    RUN,
    STUDY,
    STUDY_NUMBER,
    WORK_FOLDER,
)
from tests.helpers import run_cli
from tests.search_helpers import duckdb_available

pytestmark = pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine is not installed")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "instep.yaml"
STUDY_FILE = ROOT / "rules" / "studies" / "instep.yaml"
INDEX = dt.date(2026, 11, 1)  # synthetic_ehr's extract date
HISTORY = (DECISION, REVIEW_SHEET, BATCH, INVITATION, STUDY_NUMBER)


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    out = tmp_path_factory.mktemp("extract")
    synthetic_ehr.generate(out, practices=1, patients=400, seed=11, formats=("ndjson",), workers=1)
    return out / "fhir"


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    if kind == "duckdb":
        return f"duckdb:///{tmp_path / f'{name}.duckdb'}"
    return request.getfixturevalue("postgres_url")


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in HISTORY}


def give_history(engine: Engine, letters: int = 6, replies: int = 2) -> list[int]:
    """A search run with a review sheet, GP decisions, a letter batch, invitations, study numbers
    and replies, written as the review and letters commands write them; the invited patient ids."""
    run_id = run_search(engine, RULES, INDEX)
    with engine.begin() as conn:
        study_id = conn.execute(select(RUN.c.study_id).where(RUN.c.id == run_id)).scalar_one()
        if study_id is None:
            study_id = conn.execute(
                insert(STUDY).values(code="instep", title="InSTEP").returning(STUDY.c.id)
            ).scalar_one()
        people = conn.execute(
            select(PATIENT.c.id, PATIENT.c.nhs_number)
            .join(RESULT, RESULT.c.patient_id == PATIENT.c.id)
            .where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
            .order_by(RESULT.c.rank)
            .limit(letters + 3)
        ).all()
        assert len(people) == letters + 3, "the made-up practice should give enough candidates"
        sheet = conn.execute(
            insert(REVIEW_SHEET)
            .values(token=str(uuid.uuid4()), run_id=run_id, rows=len(people))
            .returning(REVIEW_SHEET.c.id)
        ).scalar_one()
        conn.execute(
            insert(DECISION),
            [
                {
                    "run_id": run_id,
                    "patient_id": pid,
                    "decision": "invite" if i < letters else "do_not_invite",
                    "reason_code": None if i < letters else "recent_bereavement",
                    "reviewer": "Dr A",
                    "sheet_id": sheet,
                }
                for i, (pid, _nhs) in enumerate(people)
            ],
        )
        batch = conn.execute(
            insert(BATCH)
            .values(run_id=run_id, study_id=study_id, letters_written=letters, refusals={"died": 1})
            .returning(BATCH.c.id)
        ).scalar_one()
        numbers = [f"INSTEP-{uuid.uuid4().hex[:10].upper()}" for _ in range(letters)]
        conn.execute(
            insert(STUDY_NUMBER),
            [
                {"study_id": study_id, "nhs_number": nhs, "study_number": numbers[i]}
                for i, (_pid, nhs) in enumerate(people[:letters])
            ],
        )
        conn.execute(
            insert(INVITATION),
            [
                {
                    "study_id": study_id,
                    "patient_id": pid,
                    "nhs_number": nhs,
                    "run_id": run_id,
                    "batch_id": batch,
                    "study_number": numbers[i],
                    "status": "declined" if i < replies else "drafted",
                    "reply": "not_interested" if i < replies else None,
                }
                for i, (pid, nhs) in enumerate(people[:letters])
            ],
        )
    return [pid for pid, _nhs in people[:letters]]


def _loaded(url: str, extract: Path) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    load_extract(engine, [extract])
    return engine


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [
        ("sqlite", "duckdb"),
        ("duckdb", "sqlite"),
        pytest.param("postgresql", "duckdb", marks=pytest.mark.postgres),
        pytest.param("duckdb", "postgresql", marks=pytest.mark.postgres),
    ],
)
def test_case_7_copy_replace_never_deletes_history(source_kind, target_kind, extract, tmp_path, request):
    """The region flow's trap: history written in the copy, then the loading database copied over
    it with --replace. Refused, naming each kind and how many, and nothing is changed; after the
    copy back (allowed: nothing is lost) the same copy goes through and keeps every row."""
    if source_kind == "duckdb":
        loading = _loaded(f"sqlite:///{tmp_path / 'loading.db'}", extract)
        source = make_engine(_url("duckdb", request, tmp_path, "source"))
        copy_database(loading, source)
        loading.dispose()
    else:
        source = _loaded(_url(source_kind, request, tmp_path, "source"), extract)
    target = make_engine(_url(target_kind, request, tmp_path, "target"))
    copy_database(source, target)
    invited = give_history(target, letters=6, replies=2)
    before = _counts(target)

    with pytest.raises(HistoryWouldBeLost) as refused:
        copy_database(source, target, replace=True)

    assert refused.value.lost == {
        "letters": 6,
        "replies": 2,
        "letter_changes": 0,
        "decisions": 9,
        "sheets": 1,
        "batches": 1,
        "study_numbers": 6,
    }
    message = str(refused.value)
    for words in ("6 letters written", "9 GP decisions", "2 replies", "1 letter batch", "6 study numbers"):
        assert words in message, words
    assert "would delete them" in message and "--delete-history" in message
    assert "recruit db copy --db" in message and "Nothing was changed" in message
    assert _counts(target) == before

    # The way the message gives: copy the target back (nothing of the source is lost), then again.
    copy_database(target, source, replace=True)
    summary = copy_database(source, target, replace=True)
    assert summary.history_deleted == {}
    assert _counts(target) == before
    with target.connect() as conn:
        kept = set(conn.execute(select(INVITATION.c.patient_id)).scalars())
    assert kept == set(invited)
    source.dispose()
    target.dispose()


def test_a_later_reply_or_posting_alone_is_history_too(extract, tmp_path):
    """The letters are in both databases, but a reply recorded only in the target still counts."""
    source = _loaded(f"sqlite:///{tmp_path / 'source.db'}", extract)
    give_history(source, letters=4, replies=0)
    target = make_engine(f"duckdb:///{tmp_path / 'region.duckdb'}")
    copy_database(source, target)
    with target.begin() as conn:
        first, second = conn.execute(select(INVITATION.c.id).order_by(INVITATION.c.id).limit(2)).scalars()
        conn.execute(
            update(INVITATION)
            .where(INVITATION.c.id == first)
            .values(reply="do_not_contact", status="do_not_contact")
        )
        conn.execute(update(INVITATION).where(INVITATION.c.id == second).values(status="sent"))

    with pytest.raises(HistoryWouldBeLost, match=r"holds 1 reply and 1 change to a letter") as refused:
        copy_database(source, target, replace=True)
    assert refused.value.lost["letters"] == 0 and refused.value.lost["decisions"] == 0
    with target.connect() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(INVITATION).where(INVITATION.c.reply == "do_not_contact")
            ).scalar_one()
            == 1
        )
    source.dispose()
    target.dispose()


def test_history_is_deleted_only_when_asked_and_the_copy_says_what_went(extract, tmp_path):
    source = _loaded(f"sqlite:///{tmp_path / 'source.db'}", extract)
    target = make_engine(f"duckdb:///{tmp_path / 'region.duckdb'}")
    copy_database(source, target)
    give_history(target, letters=3, replies=1)

    summary = copy_database(source, target, replace=True, delete_history=True)

    assert summary.history_deleted == {
        "letters": 3,
        "replies": 1,
        "decisions": 6,
        "sheets": 1,
        "batches": 1,
        "study_numbers": 3,
    }
    assert set(_counts(target).values()) == {0}
    source.dispose()
    target.dispose()


def test_both_sides_holding_history_the_other_lacks_is_said(extract, tmp_path):
    """Letters written in each database: copying either way would lose some; the message says so
    instead of suggesting a copy back that would itself be refused."""
    source = _loaded(f"sqlite:///{tmp_path / 'source.db'}", extract)
    target = make_engine(f"duckdb:///{tmp_path / 'region.duckdb'}")
    copy_database(source, target)
    give_history(target, letters=2, replies=0)
    give_history(source, letters=2, replies=0)
    with pytest.raises(HistoryWouldBeLost, match="copying either way would lose some"):
        copy_database(source, target, replace=True)
    with pytest.raises(HistoryWouldBeLost):
        copy_database(target, source, replace=True)
    with source.connect() as src, target.connect() as dst:
        assert history_missing(src, dst)["letters"] == 2
        assert history_missing(dst, src)["letters"] == 2
    source.dispose()
    target.dispose()


def test_folders_still_being_written_stay_with_their_own_database(extract, tmp_path):
    """A work_folder row names a folder on the machine of the database whose command made it: a
    copy neither carries it to the other database nor deletes the target's own (its next command
    must still find and clean a killed run's leftovers)."""
    source = _loaded(f"sqlite:///{tmp_path / 'source.db'}", extract)
    target = make_engine(f"duckdb:///{tmp_path / 'region.duckdb'}")
    copy_database(source, target)
    with source.begin() as conn:
        conn.execute(insert(WORK_FOLDER).values(path="/src/.letters.partial-a", purpose="letters"))
    with target.begin() as conn:
        conn.execute(insert(WORK_FOLDER).values(path="/dst/.letters.partial-b", purpose="letters"))
    copy_database(source, target, replace=True)
    with target.connect() as conn:
        assert list(conn.execute(select(WORK_FOLDER.c.path)).scalars()) == ["/dst/.letters.partial-b"]
    source.dispose()
    target.dispose()


def _approve_everyone(sheet: Path) -> Path:
    """A GP's workbook with Invite chosen on every row."""
    from recruit.review import HEADERS

    book = load_workbook(sheet)
    ws = book["Review"]
    for row in range(2, ws.max_row + 1):
        if ws.cell(row, HEADERS["NHS number"]).value:
            ws.cell(row, HEADERS["Decision"]).value = "Invite"
    decided = sheet.with_name("review-decided.xlsx")
    book.save(decided)
    return decided


def test_the_readme_region_flow_keeps_every_letter(extract, tmp_path):
    """The README's region flow, as a practice would run it: load into SQLite, copy to DuckDB,
    search, review, letters and replies there; next month load again and copy --replace: refused
    in plain words with nothing changed. The documented way (copy the region file back first)
    works, and the next search's already_invited step still leaves out everyone written to."""
    from recruit.letters.batch import write_letters
    from recruit.replies import import_replies
    from recruit.review import export_review, import_review

    loading = f"sqlite:///{tmp_path / 'recruit.db'}"
    region_file = tmp_path / "region.duckdb"
    region = f"duckdb:///{region_file}"
    assert run_cli("load", "--create", str(extract), "--db", loading, cwd=ROOT).returncode == 0
    copied = run_cli("db", "copy", "--db", loading, "--to", region, cwd=ROOT)
    assert copied.returncode == 0, copied.stderr

    engine = make_engine(region)
    run_id = run_search(engine, RULES, INDEX)
    sheet = export_review(engine, run_id, tmp_path / "review.xlsx").path
    import_review(engine, _approve_everyone(sheet), "Dr A", run_id=run_id)
    letters = write_letters(
        engine, run_id, tmp_path / "letters", limit=4, study_file=STUDY_FILE, letter_date=INDEX
    )
    assert letters.letters_written > 0
    with engine.connect() as conn:
        written = conn.execute(select(INVITATION.c.study_number, INVITATION.c.patient_id)).all()
    replies = tmp_path / "replies.csv"
    replies.write_text(
        f"Study number,Reply,Date\n{written[0][0]},not interested,{dt.date.today().isoformat()}\n"
    )
    import_replies(engine, replies)
    before = _counts(engine)
    engine.dispose()

    # Next month: load again, then the copy as the README used to say. Refused, plainly.
    assert run_cli("load", "--create", str(extract), "--db", loading, cwd=ROOT).returncode == 0
    refused = run_cli("db", "copy", "--db", loading, "--to", region, "--replace", cwd=ROOT)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"{len(written)} letters written" in said and "1 reply" in said and "GP decisions" in said
    assert "would delete them" in said and "--delete-history" in said
    engine = make_engine(region)
    assert _counts(engine) == before
    engine.dispose()

    # The documented way: the region file back into the loading database, load, copy again.
    back = run_cli("db", "copy", "--db", region, "--to", loading, "--replace", cwd=ROOT)
    assert back.returncode == 0, back.stderr
    assert run_cli("load", "--create", str(extract), "--db", loading, cwd=ROOT).returncode == 0
    again = run_cli("db", "copy", "--db", loading, "--to", region, "--replace", cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "Deleted" not in again.stdout

    engine = make_engine(region)
    assert _counts(engine) == before
    next_run = run_search(engine, RULES, INDEX)
    with engine.connect() as conn:
        steps = dict(
            conn.execute(
                select(RESULT.c.patient_id, RESULT.c.excluding_step).where(
                    RESULT.c.run_id == next_run, RESULT.c.patient_id.in_([pid for _n, pid in written])
                )
            ).all()
        )
    assert set(steps) == {pid for _n, pid in written}
    assert set(steps.values()) == {"already_invited"}, steps
    engine.dispose()


def test_cli_delete_history_needs_replace_and_says_what_it_deleted(extract, tmp_path):
    loading = f"sqlite:///{tmp_path / 'recruit.db'}"
    region = f"duckdb:///{tmp_path / 'region.duckdb'}"
    assert run_cli("load", "--create", str(extract), "--db", loading, cwd=ROOT).returncode == 0
    assert run_cli("db", "copy", "--db", loading, "--to", region, cwd=ROOT).returncode == 0
    engine = make_engine(region)
    give_history(engine, letters=2, replies=1)
    engine.dispose()

    alone = run_cli("db", "copy", "--db", loading, "--to", region, "--delete-history", cwd=ROOT)
    assert alone.returncode == 1 and "only has a meaning with --replace" in alone.stderr
    helped = run_cli("db", "copy", "--help", cwd=ROOT)
    assert "--delete-history" in helped.stdout and "GP decisions" in " ".join(helped.stdout.split())

    done = run_cli("db", "copy", "--db", loading, "--to", region, "--replace", "--delete-history", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert "as --delete-history asked" in said and "letters written: 2" in said and "replies: 1" in said
