"""recruit load as practice staff run it: atomic under a kill, one clear line on bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

import synthetic_ehr
from recruit.db import make_engine
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx
from tests.search_helpers import fresh_engine

ROOT = Path(__file__).resolve().parents[3]


def _digest(db: Path) -> str:
    """The records a load produced, independent of row ids and of when they were loaded."""
    engine = make_engine(f"sqlite:///{db}")
    h = hashlib.sha256()
    with engine.connect() as conn:
        for sql in (
            "SELECT nhs_number, family_name, date_of_birth, postcode FROM patient ORDER BY nhs_number",
            "SELECT p.nhs_number, e.event_date, e.code_system, e.code FROM clinical_event e "
            "JOIN patient p ON p.id = e.patient_id ORDER BY 1, 2, 3, 4",
            "SELECT p.nhs_number, m.issue_date, m.code, m.course FROM medication_issue m "
            "JOIN patient p ON p.id = m.patient_id ORDER BY 1, 2, 3, 4",
            "SELECT fingerprint, records_read, records_loaded FROM extract",
        ):
            for row in conn.execute(text(sql)):
                h.update(repr(tuple(row)).encode())
    engine.dispose()
    return h.hexdigest()


@pytest.mark.slow
def test_a_load_killed_half_way_leaves_the_database_as_it_was(tmp_path):
    extract = tmp_path / "extract"
    synthetic_ehr.generate(extract, practices=1, patients=6000, seed=5, formats=("ndjson",), workers=1)
    killed_db = tmp_path / "killed" / "recruit.db"
    assert run_cli("db", "upgrade", "--db", f"sqlite:///{killed_db}", cwd=tmp_path).returncode == 0
    before = _digest(killed_db)

    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("RECRUIT_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recruit", "load", str(extract / "fhir"), "--db", f"sqlite:///{killed_db}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wal = killed_db.with_name("recruit.db-wal")
    deadline = time.monotonic() + 120
    # Wait until the load is writing (its write-ahead log is growing), then kill it outright.
    while time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 2_000_000):
        assert proc.poll() is None, "the load finished before it could be killed; make the extract bigger"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _digest(killed_db) == before  # nothing of the half load is visible

    rerun = run_cli("load", "--create", str(extract / "fhir"), "--db", f"sqlite:///{killed_db}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    clean_db = tmp_path / "clean" / "recruit.db"
    clean = run_cli("load", "--create", str(extract / "fhir"), "--db", f"sqlite:///{clean_db}", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert _digest(killed_db) == _digest(clean_db)


OTHER_CSV = {"events.csv": b"NHS Number\n", "medications.csv": b"NHS Number\n"}


@pytest.mark.parametrize(
    "files, words",
    [
        ({"Patient.ndjson": b""}, "empty"),
        ({}, "No extract files"),
        ({"patients.csv": b"\xff\xfe\x00garbage", **OTHER_CSV}, "not utf-8-sig text"),
        ({"patients.csv": b"Name,Other\nA,B\n", **OTHER_CSV}, "has no column 'Practice Code'"),
    ],
)
def test_unusable_input_is_one_clear_line(tmp_path, files, words):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    result = run_cli("load", "--create", str(folder), "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_load_prints_a_summary_and_quarantine_list_names_the_problem(tmp_path):
    folder = tmp_path / "in"
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Condition.ndjson", [fx.condition(), fx.condition("c2", onsetDateTime="2099-01-01")]
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "records read:        5" in result.stdout
    assert "quarantined:         1" in result.stdout and "date_in_future: 1" in result.stdout
    listed = run_cli("quarantine", "list", "--db", db, cwd=tmp_path)
    assert "Condition.ndjson" in listed.stdout and "onsetDateTime" in listed.stdout
    assert "after the extract date" in listed.stdout


def test_load_counts_each_kind_of_record_read_stored_and_quarantined(tmp_path):
    """Per resource type: read = stored + quarantined, with the commonest reasons."""
    from recruit.load import load_extract

    folder = tmp_path / "in"
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Condition.ndjson",
        [fx.condition(), fx.condition("c2", onsetDateTime="2099-01-01"), fx.condition("c3", subject=None)],
    )
    (folder / "Broken.ndjson").write_text('{"resourceType": "Condition", "id": \n', encoding="utf-8")
    engine = fresh_engine(f"sqlite:///{tmp_path / 'r.db'}")
    summary = load_extract(engine, [folder], extract_date=dt.date(2026, 11, 1))
    kinds = summary.by_kind
    assert kinds["Condition"].read == 3 and kinds["Condition"].quarantined == 2
    assert kinds["Condition"].stored == 1
    assert dict(kinds["Condition"].reasons)["date_in_future"] == 1
    assert kinds["unreadable"].read == 1 and kinds["unreadable"].quarantined == 1
    assert sum(k.read for k in kinds.values()) == summary.read
    assert sum(k.stored for k in kinds.values()) == summary.loaded
    assert sum(k.quarantined for k in kinds.values()) == summary.quarantined

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("Condition "))
    assert "read 3, stored 1, quarantined 2" in line and "date_in_future 1" in line


GP_REPORT_PATIENTS = (
    "Patient ID,Registered Practice ODS,NHS Number,Title,First Name,Surname,Gender,Date of Birth,"
    "Date of Death,House Name/Flat,Number and Street,Village,Town,County,Postcode,Date of Registration,"
    "Date of Deregistration,Usual GP,Interpreter Required,Main Spoken Language\n"
    "101,ZZ9002,999 000 0018,Mrs,Ann,=cmd|' /C calc'!A0,F,01-Feb-1970,,Flat 2,3 Mill Lane,,Testtown,"
    "Testshire,ZZ1 2ZZ,05-Jan-2010,,Dr Sam Jones,Y,Polish\n"
    "102,ZZ9002,9990000026,Mr,Bob,Smith,M,12-Dec-1985,,,4 Mill Lane,,Testtown,,ZZ1 3ZZ,05-Jan-2010,"
    "01-Jun-2024,Dr Sam Jones,N,\n"
)
GP_REPORT_EVENTS = (
    "NHS Number,Date,Code,Coding Scheme,Description,Value,Units,Entry ID\n"
    "9990000018,03-Mar-2024,1M52.00,Read,Chronic pain,,,e1\n"
    "9990000018,04-Mar-2024,XaIWQ,CTV3,Whatever,,,e2\n"
    "9990000026,05-Mar-2024,82423001,SNOMED,Chronic pain,,,e3\n"
    "9990000026,31-Feb-2024,82423001,SNOMED,Chronic pain,,,e4\n"
)
GP_REPORT_MEDS = (
    "NHS Number,Date of Issue,dm+d Code,Medication,Quantity,Issue Type,Issue ID\n"
    "9990000018,01-Apr-2024,322341003,Co-codamol 30mg/500mg tablets,100,R,i1\n"
)


def test_gp_system_report_layout_loads_with_its_mapping(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "Patient Details 2026-11.csv").write_text(GP_REPORT_PATIENTS)
    (folder / "Coded Entries 2026-11.csv").write_text(GP_REPORT_EVENTS)
    (folder / "Medication Issues 2026-11.csv").write_text(GP_REPORT_MEDS)
    db = tmp_path / "r.db"
    result = run_cli(
        "load",
        "--create",
        str(folder),
        "--mapping",
        str(ROOT / "rules" / "mappings" / "gp_system_report.yaml"),
        "--db",
        f"sqlite:///{db}",
        "--extract-date",
        "2026-11-01",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "records read:        7" in result.stdout and "quarantined:         1" in result.stdout
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT nhs_number, family_name, address, needs_interpreter, language, registration_end "
                "FROM patient ORDER BY nhs_number"
            )
        ).all()
        events = conn.execute(text("SELECT code_system, code FROM clinical_event ORDER BY code")).all()
        meds = conn.execute(text("SELECT code, course, quantity FROM medication_issue")).all()
    assert rows[0][:5] == (
        "9990000018",
        "=cmd|' /C calc'!A0",
        "Flat 2\n3 Mill Lane\nTesttown\nTestshire",
        1,
        "Polish",
    )
    assert rows[1][5] is not None
    assert events == [("readv2", "1M52."), ("snomedct", "82423001"), ("ctv3", "XaIWQ")]
    assert meds == [("322341003", "repeat", 100.0)]


def test_quarantine_list_and_export_filter_by_reason_and_file(tmp_path):
    """Practice staff fixing one kind of problem, or one file, see only those records."""
    folder = tmp_path / "in"
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Condition.ndjson",
        [fx.condition(), fx.condition("c2", onsetDateTime="2099-01-01"), fx.condition("c3", subject=None)],
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    loaded = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path
    )
    assert loaded.returncode == 0, loaded.stderr

    future = run_cli("quarantine", "list", "--reason", "DATE_IN_FUTURE", "--db", db, cwd=tmp_path)
    assert future.returncode == 0, future.stderr
    assert "date_in_future: 1" in future.stdout and "onsetDateTime" in future.stdout
    assert "c3" not in future.stdout and "subject" not in future.stdout

    by_file = run_cli("quarantine", "list", "--file", "Condition.ndjson", "--db", db, cwd=tmp_path)
    assert "date_in_future: 1" in by_file.stdout and "onsetDateTime" in by_file.stdout
    assert by_file.stdout.count("extract 1:") == 2  # both reasons in that file

    none = run_cli("quarantine", "list", "--reason", "no_such_reason", "--db", db, cwd=tmp_path)
    assert none.returncode == 0 and "No quarantined records match." in none.stdout
    assert "date_in_future" in none.stdout  # says which reasons there are
    elsewhere = run_cli("quarantine", "list", "--file", "Observation", "--db", db, cwd=tmp_path)
    assert "No quarantined records match." in elsewhere.stdout

    out = tmp_path / "q.csv"
    exported = run_cli(
        "quarantine", "export", "--out", str(out), "--reason", "date_in_future", "--db", db, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "date_in_future" in lines[1]
