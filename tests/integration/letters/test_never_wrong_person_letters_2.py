"""Issue 15, the letters side: cases 4, 5, 6 and 8 (for the letters folders).

4. A record that cannot be printed never stops the batch: it is listed in could-not-print.csv
   with its reason, gets no invitation, and every other letter is produced.
5. A letters run killed part-way (a real `recruit letters` process, SIGKILL) leaves a staging
   folder of PDFs that the next command deletes; the rerun gives the same people the same study
   numbers (the numbers in the killed run's PDF names), and nobody holds two for one study.
6. `recruit letters` before any GP review says nobody is approved yet and what to do.
8. Everything in the batch folder is readable by its owner only, whatever the umask.

Each runs on SQLite and PostgreSQL (tests/integration/letters/conftest.py `engine`).
"""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, update

from recruit import work_folders
from recruit.letters import pdf
from recruit.letters.batch import NobodyApproved, _unprintable, write_letters
from recruit.letters.numbers import is_valid_study_number, study_numbers_for
from recruit.letters.select import COULD_NOT_PRINT, REFUSALS
from recruit.letters.study import load_study_settings, store_study
from recruit.models import LetterBatch, Patient
from recruit.tables import INVITATION, STUDY_NUMBER, WORK_FOLDER
from tests.helpers import run_cli
from tests.integration.letters.builders import STUDY_FILE, Person, build, invited

LONG_ADDRESS = "A" * 1500  # the address from the issue: one line of 1,500 characters


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _numbers(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(STUDY_NUMBER.c.nhs_number, STUDY_NUMBER.c.study_number)).all())


def _count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _staging(parent: Path) -> list[Path]:
    return sorted(parent.glob(".*.partial-*"))


# --- case 4: a record that cannot be printed never stops the batch -----------------------------


def test_case_4_an_unprintable_record_never_stops_the_batch(engine, tmp_path):
    world = build(
        engine,
        [
            Person(1, family="First"),
            Person(2, family="Longaddress", address=LONG_ADDRESS),
            Person(3, family="Bell\x07", given="Ann"),  # a control character in the name
            Person(4, family="Manylines", address="\n".join(f"Line {i} " + "x" * 60 for i in range(15))),
            Person(5, family="Last"),
        ],
    )
    summary = write_letters(engine, world.run_id, tmp_path / "out", study_file=STUDY_FILE, workers=1)

    assert summary.letters_written == 2
    assert set(invited(engine)) == {1, 5}  # no invitation for a letter that was not printed
    assert summary.could_not_print == {"details_do_not_fit_window": 2, "characters_cannot_be_printed": 1}
    assert summary.refusals == summary.could_not_print  # counted in the audit as not written to
    listed = {row["Surname"]: row for row in _rows(tmp_path / "out" / "could-not-print.csv")}
    assert set(listed) == {"Longaddress", "Bell\x07", "Manylines"}
    assert listed["Longaddress"]["WhyNotPrinted"].startswith("Name or address too long")
    assert listed["Bell\x07"]["WhyNotPrinted"].startswith("Name or address holds characters")
    n = Person(2).nhs_number  # a list people read: 3-3-4
    assert listed["Longaddress"]["NHSNumber"] == f"{n[:3]} {n[3:6]} {n[6:]}"
    # They are not in the practice's contact list (that is for people to reach another way).
    assert _rows(tmp_path / "out" / "contact-another-way.csv") == []
    assert {r["Surname"] for r in _rows(tmp_path / "out" / "mail-merge.csv")} == {"First", "Last"}
    assert len(list((tmp_path / "out" / "letters").glob("*.pdf"))) == 2

    # Once the record is put right, a later run prints the letter, with the number kept for them.
    kept = _numbers(engine)[Person(2).nhs_number]
    with engine.begin() as conn:
        conn.execute(update(Patient).where(Patient.id == 2).values(address="2 Short Road\nSometown"))
    again = write_letters(engine, world.run_id, tmp_path / "again", study_file=STUDY_FILE, workers=1)
    assert again.letters_written == 1
    assert invited(engine, again.batch_id)[2]["study_number"] == kept


def test_case_4_a_layout_error_for_one_letter_leaves_the_others(engine, tmp_path, monkeypatch):
    """A layout error for one letter's details (whatever WeasyPrint raises): the chunk is laid out
    again letter by letter, and only the letter that fails alone is left out."""
    real = pdf.render_html

    def fragile(html: str):  # type: ignore[no-untyped-def]
        if "Explodes" in html:
            raise ValueError("layout engine failure")
        return real(html)

    monkeypatch.setattr(pdf, "render_html", fragile)
    world = build(engine, [Person(1), Person(2, family="Explodes"), Person(3)])
    summary = write_letters(engine, world.run_id, tmp_path / "out", study_file=STUDY_FILE, workers=1)
    assert summary.letters_written == 2
    assert set(invited(engine)) == {1, 3}
    assert summary.could_not_print == {"layout_failed": 1}
    [row] = _rows(tmp_path / "out" / "could-not-print.csv")
    assert row["Surname"] == "Explodes" and "could not be laid out" in row["WhyNotPrinted"]


def test_case_4_the_command_says_what_could_not_print_without_identifiers(engine, tmp_path):
    world = build(engine, [Person(1, family="Posted"), Person(2, family="Toolong", address=LONG_ADDRESS)])
    done = run_cli(
        "letters",
        str(world.run_id),
        "--out",
        "out",
        "--study",
        str(STUDY_FILE),
        "--db",
        _url(engine),
        cwd=tmp_path,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Traceback" not in said
    assert "1 letters" in said
    assert "Could not print: 1 (listed in could-not-print.csv" in said
    assert "Name or address too long for the envelope window" in said
    assert "Toolong" not in said and "AAAA" not in said and Person(2).nhs_number not in said


@given(text=st.text(max_size=30))
def test_case_4_only_characters_no_printer_can_print_are_refused(text):
    """A name is refused for its characters only if it holds a control character (tab and line
    ends aside), a lone surrogate, a private-use or an unassigned code point."""
    import unicodedata

    from recruit.letters.render import PatientView

    class _P:
        patient = PatientView(full_name=text, salutation="Ann", address_lines=("1 Road",), postcode="LS1 1AA")

    bad = any(unicodedata.category(c) in {"Cc", "Cs", "Co", "Cn"} and c not in "\t\n\r" for c in text)
    assert (_unprintable(_P()) == "characters_cannot_be_printed") == bad  # type: ignore[arg-type]


def test_could_not_print_reasons_are_refusals_with_plain_labels():
    assert set(COULD_NOT_PRINT) <= set(REFUSALS)


# --- case 5: killed runs leave nothing behind and keep the study numbers ----------------------


def test_case_5_killed_run_leftovers_are_deleted_and_the_rerun_keeps_its_study_numbers(engine, tmp_path):
    people = [Person(i, family=f"Person{i}") for i in range(1, 121)]
    world = build(engine, people)
    command = [sys.executable, "-m", "recruit", "letters", str(world.run_id), "--out", "out"]
    command += ["--study", str(STUDY_FILE), "--db", _url(engine)]
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("RECRUIT_DATABASE_URL", None)
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while not seen:
            assert process.poll() is None, "the letters run finished before it could be killed"
            assert time.monotonic() < deadline, "no letter was printed in time"
            seen = {p.stem for folder in _staging(tmp_path) for p in (folder / "letters").glob("*.pdf")}
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    [leftover] = _staging(tmp_path)
    time.sleep(0.5)  # a printing process may finish the letter it was writing
    seen |= {p.stem for p in (leftover / "letters").glob("*.pdf")}
    assert seen and all(is_valid_study_number(n, "INSTEP") for n in seen)
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o700
    assert not (tmp_path / "out").exists()
    assert _count(engine, WORK_FOLDER) == 1 and invited(engine) == {}
    numbers_before = _numbers(engine)
    assert len(numbers_before) == len(people)  # committed before printing began
    assert seen <= set(numbers_before.values())

    # The next command that opens the database deletes the leftover folder.
    status = run_cli("db", "status", "--db", _url(engine), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "Deleted 1 unfinished folder(s) left by a letters run" in status.stderr
    assert "Traceback" not in status.stdout + status.stderr
    assert _staging(tmp_path) == [] and _count(engine, WORK_FOLDER) == 0

    # The rerun gives everyone the number they had, so the leftover letters' numbers are theirs.
    summary = write_letters(engine, world.run_id, tmp_path / "out", study_file=STUDY_FILE, workers=2)
    assert summary.letters_written == len(people)
    rows = invited(engine)
    assert {row["nhs_number"]: row["study_number"] for row in rows.values()} == numbers_before
    assert seen <= {row["study_number"] for row in rows.values()}
    assert _numbers(engine) == numbers_before  # nobody holds two numbers for the study
    assert _staging(tmp_path) == [] and _count(engine, WORK_FOLDER) == 0


def test_case_5_a_folder_still_being_written_is_never_deleted(engine, tmp_path):
    build(engine, [])
    folder = work_folders.open_folder(
        engine, work_folders.staging_path(tmp_path / "out", "0123abcd"), "letters"
    )
    (folder.path / "letter.pdf").write_bytes(b"%PDF")
    assert work_folders.clean_leftovers(engine) == 0  # locked by a running command (this one)
    assert (folder.path / "letter.pdf").exists()
    os.close(folder.lock_fd)  # as when its process dies (even by kill -9): the lock is let go
    assert work_folders.clean_leftovers(engine) == 1
    assert not folder.path.exists() and _count(engine, WORK_FOLDER) == 0


def test_case_5_only_staging_folders_are_ever_deleted(engine, tmp_path):
    """A row naming a folder that is not a staging folder (damaged, or edited by hand) loses its
    row but never the folder; a row whose folder is gone and whose process has ended is removed."""
    build(engine, [])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(ended.stdout)
    work_folders.register(engine, precious, "letters")
    work_folders.register(engine, tmp_path / ".gone.partial-00000000", "letters")
    with engine.begin() as conn:
        conn.execute(update(WORK_FOLDER).values(pid=dead_pid))
    assert work_folders.clean_leftovers(engine) == 2
    assert (precious / "keep.txt").read_text() == "keep"
    assert _count(engine, WORK_FOLDER) == 0


def test_case_5_a_folder_recorded_before_its_process_died_is_moved_into_place(engine, tmp_path):
    """Killed between recording the batch and moving its folder: the letters are recorded, so the
    folder is finished (moved to where the run would have put it), never deleted."""
    build(engine, [])
    folder = work_folders.open_folder(
        engine, work_folders.staging_path(tmp_path / "out", "89abcdef"), "letters"
    )
    (folder.path / "letters.pdf").write_bytes(b"%PDF")
    with engine.begin() as conn:
        work_folders.mark_recorded(conn, folder)
    os.close(folder.lock_fd)  # dies without cleaning up
    assert work_folders.clean_leftovers(engine) == 1
    assert (tmp_path / "out" / "letters.pdf").read_bytes() == b"%PDF"
    assert not folder.path.exists() and not (tmp_path / "out" / work_folders.LOCK_NAME).exists()


def _study_id(engine: Engine) -> int:
    with engine.begin() as conn:
        return store_study(conn, load_study_settings(STUDY_FILE))


def test_case_5_two_runs_numbering_the_same_people_at_once_agree(engine):
    build(engine, [])
    study_id = _study_id(engine)
    people = [f"9{i:09d}" for i in range(200)]
    results: list[dict[str, str]] = []
    barrier = threading.Barrier(2)

    def number() -> None:
        barrier.wait()
        results.append(study_numbers_for(engine, study_id, "INSTEP", people))

    threads = [threading.Thread(target=number) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] == _numbers(engine)
    assert len(set(results[0].values())) == len(people)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(waves=st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=5))
def test_case_5_a_person_never_holds_two_study_numbers(engine, waves):
    """Whatever waves ask for whichever people, each person keeps the number first given."""
    build(engine, [])
    study_id = _study_id(engine)
    model: dict[str, str] = {}
    for wave in waves:
        nhs = [f"9{i:09d}" for i in wave]
        got = study_numbers_for(engine, study_id, "INSTEP", nhs)
        assert set(got) == set(nhs)
        for person, number in got.items():
            assert model.setdefault(person, number) == number
    assert _numbers(engine) == model
    assert len(set(model.values())) == len(model)


# --- case 6: nobody approved yet ---------------------------------------------------------------


def test_case_6_letters_before_any_review_says_nobody_is_approved(engine, tmp_path):
    world = build(
        engine, [Person(1, decision=None), Person(2, decision=None), Person(3, decision="do_not_invite")]
    )
    with pytest.raises(NobodyApproved) as raised:
        write_letters(engine, world.run_id, tmp_path / "out", study_file=STUDY_FILE, workers=1)
    message = str(raised.value)
    assert f"Nobody on search run {world.run_id} has been approved by a GP yet" in message
    assert "3 candidates" in message
    assert f"recruit review export {world.run_id} --out review.xlsx" in message
    assert "recruit review import" in message
    # Nothing written: no folder, no batch, no numbers.
    assert list(tmp_path.iterdir()) == []
    assert _count(engine, LetterBatch.__table__) == 0 and _count(engine, STUDY_NUMBER) == 0
    assert _count(engine, INVITATION) == 0


def test_case_6_the_command_says_nobody_is_approved_plainly(engine, tmp_path):
    world = build(engine, [Person(1, decision=None)])
    done = run_cli(
        "letters",
        str(world.run_id),
        "--out",
        "out",
        "--study",
        str(STUDY_FILE),
        "--db",
        _url(engine),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert f"Nobody on search run {world.run_id} has been approved by a GP yet" in done.stderr
    assert f"recruit review export {world.run_id}" in done.stderr
    assert not (tmp_path / "out").exists() and _staging(tmp_path) == []


# --- case 8: the batch folder is the owner's only ----------------------------------------------


def test_case_8_letters_files_owner_only(engine, tmp_path):
    world = build(
        engine,
        [Person(i) for i in range(1, 4)]
        + [Person(4, braille=True), Person(5, address=LONG_ADDRESS), Person(6, address=None)],
    )
    before = os.umask(0o022)
    try:
        summary = write_letters(
            engine, world.run_id, tmp_path / "out", study_file=STUDY_FILE, workers=2
        )  # printing processes too
    finally:
        os.umask(before)
    assert summary.letters_written == 3
    out = tmp_path / "out"
    found = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert {"letters.pdf", "mail-merge.csv", "mail-merge.xlsx", "contact-another-way.csv"} <= set(found)
    assert {"could-not-print.csv", "batch.json", "letters"} <= set(found)
    assert sum(name.startswith("letters/") for name in found) == 3
    assert work_folders.LOCK_NAME not in found
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name, mode in found.items():
        assert mode == (0o700 if (out / name).is_dir() else 0o600), name
