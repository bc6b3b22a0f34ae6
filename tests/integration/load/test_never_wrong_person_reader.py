"""Issue 14 (never the wrong person), the reading side: every case the reader owns, by number.

Small hand-made extracts in the shapes UK extracts come in; every NHS number is in the 999 range
NHS England never issues.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load.chunks import Stager, stage_chunk
from recruit.load.fhir import FhirReader, NotUsed
from recruit.load.files import Record
from recruit.load.values import DateReader, Invalid
from recruit.models import ClinicalEvent, MedicationIssue, Patient, Quarantine
from tests.integration.load import fhir_samples as fx
from tests.integration.load.db_helpers import count

ROOT = Path(__file__).resolve().parents[3]
SYNTH_MAPPING = ROOT / "rules" / "mappings" / "synthetic_ehr.yaml"
EXTRACT_DATE = dt.date(2026, 11, 1)


def reader() -> FhirReader:
    return FhirReader(DateReader(EXTRACT_DATE))


def rows(engine, *cols, where=None) -> list[tuple]:
    q = select(*cols)
    if where is not None:
        q = q.where(where)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]


def load(engine, *paths: Path, **kw):
    return load_extract(engine, list(paths), extract_date=EXTRACT_DATE, **kw)


# --- case 11: what counts as evidence (the reading side: every record keeps its status) ------------


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({}, "recorded"),
        ({"clinicalStatus": {"coding": [{"code": "active"}]}}, "active"),
        ({"clinicalStatus": {"coding": [{"code": "relapse"}]}}, "active"),
        ({"clinicalStatus": {"coding": [{"code": "resolved"}]}}, "resolved"),
        ({"clinicalStatus": {"coding": [{"code": "inactive"}]}}, "resolved"),
        ({"clinicalStatus": "remission"}, "resolved"),  # GP Connect STU3: a plain code
        (
            {
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {"coding": [{"code": "provisional"}]},
            },
            "unconfirmed",
        ),
    ],
)
def test_case11_condition_status_is_read_into_the_vocabulary(extra, status):
    assert reader().read(fx.condition(**extra)).events[0].status == status


@pytest.mark.parametrize(
    ("obs_status", "status"),
    [(None, "recorded"), ("final", "recorded"), ("preliminary", "unconfirmed"), ("cancelled", "cancelled")],
)
def test_case11_observation_status_is_read_into_the_vocabulary(obs_status, status):
    res = fx.condition(resourceType="Observation", effectiveDateTime="2024-02-03")
    del res["onsetDateTime"]
    if obs_status:
        res["status"] = obs_status
    assert reader().read(res).events[0].status == status


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"status": "completed"}, "completed"),
        ({"status": "stopped"}, "stopped"),
        ({"status": "cancelled"}, "cancelled"),
        ({"status": "on-hold"}, "on_hold"),
        ({"status": "active", "doNotPerform": True}, "do_not_perform"),
    ],
)
def test_case11_prescription_status_is_stored_not_dropped(extra, status):
    assert reader().read(fx.med_request(**extra)).medications[0].status == status


def test_case11_statement_not_taken_and_entered_in_error_not_used():
    statement = fx.med_request(resourceType="MedicationStatement", status="not-taken")
    statement["effectiveDateTime"] = "2024-03-01"
    assert reader().read(statement).medications[0].status == "not_taken"
    with pytest.raises(NotUsed, match="entered-in-error"):
        reader().read(fx.med_request(status="entered-in-error"))


def test_case11_wrong_typed_status_is_quarantined_not_defaulted():
    with pytest.raises(Invalid) as err:
        reader().read(fx.med_request(doNotPerform="true"))
    assert err.value.code == "wrong_type" and err.value.field == "doNotPerform"


def test_case11_statuses_reach_the_database(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Condition.ndjson",
        [
            fx.condition("c1", clinicalStatus={"coding": [{"code": "resolved"}]}),
            fx.condition("c2", code="279039007"),
        ],
    )
    fx.write_ndjson(
        folder / "MedicationRequest.ndjson",
        [fx.med_request("m1", status="cancelled"), fx.med_request("m2", status="active", doNotPerform=True)],
    )
    load(engine, folder)
    assert sorted(rows(engine, ClinicalEvent.source_resource_id, ClinicalEvent.status)) == [
        ("c1", "resolved"),
        ("c2", "recorded"),
    ]
    assert sorted(rows(engine, MedicationIssue.source_resource_id, MedicationIssue.status)) == [
        ("m1", "cancelled"),
        ("m2", "do_not_perform"),
    ]


def _csv_extract(folder: Path, bom: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "\ufeff" if bom else ""
    (folder / "patients.csv").write_text(
        prefix + "Practice Code,NHS Number,Surname,Forename,Sex,Date of Birth,Date of Death,"
        "Address Line 1,Town,Postcode,Registration Date,Deregistration Date,Usual GP\n"
        f"ZZ9001,{fx.NHS_NUMBERS[0]},TESTER,Pat,Female,01/05/1980,,2 Low Road,Testtown,ZZ1 1ZZ,"
        "01/01/2000,,Dr Alex Example\n",
        encoding="utf-8",
    )
    (folder / "events.csv").write_text(
        f"NHS Number,Date,Code,Code System,Term\n{fx.NHS_NUMBERS[0]},03/02/2024,82423001,SNOMED CT,Pain\n",
        encoding="utf-8",
    )
    (folder / "medications.csv").write_text(
        f"NHS Number,Issue Date,dm+d Code,Drug,Quantity,Issue Type\n"
        f"{fx.NHS_NUMBERS[0]},01/03/2024,322341003,Codeine,100,Repeat\n",
        encoding="utf-8",
    )
    return folder


def test_case11_csv_events_are_recorded_and_issues_issued(sqlite_engine, tmp_path):
    load(sqlite_engine, _csv_extract(tmp_path / "csv"), format="csv", mapping=SYNTH_MAPPING)
    assert rows(sqlite_engine, ClinicalEvent.status) == [("recorded",)]
    assert rows(sqlite_engine, MedicationIssue.status) == [("issued",)]


# --- case 13: only ordinary files inside the folder ----------------------------------------------


def _load_with_timeout(engine, paths: list[Path], fifo: Path | None = None, **kw):
    """Run a load on a thread; if it blocks on a FIFO, unblock it (so the test never hangs) and fail."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["summary"] = load_extract(engine, paths, extract_date=EXTRACT_DATE, **kw)
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        if fifo is not None:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        thread.join(30)
        pytest.fail("the load blocked on the FIFO instead of refusing it")
    return outcome


def test_case13_fifo_named_directly_is_refused_at_once(sqlite_engine, tmp_path):
    fifo = tmp_path / "Patient.ndjson"
    os.mkfifo(fifo)
    outcome = _load_with_timeout(sqlite_engine, [fifo], fifo)
    err = outcome.get("error")
    assert isinstance(err, RecruitError)
    assert str(fifo) in str(err) and "named pipe" in str(err)
    assert count(sqlite_engine, Patient) == 0


def test_case13_fifo_inside_a_folder_is_refused_not_skipped(sqlite_engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    fifo = folder / "Observation.ndjson"
    os.mkfifo(fifo)
    outcome = _load_with_timeout(sqlite_engine, [folder], fifo)
    err = outcome.get("error")
    assert isinstance(err, RecruitError) and "Observation.ndjson" in str(err)
    assert count(sqlite_engine, Patient) == 0


def test_case13_fifo_in_a_csv_folder_is_refused(sqlite_engine, tmp_path):
    folder = _csv_extract(tmp_path / "csv")
    fifo = folder / "extra.csv"
    os.mkfifo(fifo)
    outcome = _load_with_timeout(sqlite_engine, [folder], fifo, format="csv", mapping=SYNTH_MAPPING)
    assert isinstance(outcome.get("error"), RecruitError) and "extra.csv" in str(outcome["error"])


def test_case13_symlink_out_of_the_folder_is_refused_and_nothing_stored(sqlite_engine, tmp_path):
    secret = tmp_path / "outside" / "system-file.txt"
    secret.parent.mkdir()
    secret.write_bytes(b'{"not": "an extract"} SECRET-BYTES-OF-A-SYSTEM-FILE\n')
    folder = tmp_path / "x"
    fx.base_extract(folder)
    (folder / "Observation.ndjson").symlink_to(secret)
    with pytest.raises(RecruitError, match="symbolic link") as err:
        load(sqlite_engine, folder)
    assert "Observation.ndjson" in str(err.value)
    assert count(sqlite_engine, Patient) == 0 and count(sqlite_engine, Quarantine) == 0
    # guess_format (no --format) and the CSV reader refuse the same way
    with pytest.raises(RecruitError, match="symbolic link"):
        load(sqlite_engine, folder, format="csv", mapping=SYNTH_MAPPING)
    with sqlite_engine.connect() as conn:
        dump = "\n".join(conn.connection.dbapi_connection.iterdump())
    assert "SECRET-BYTES" not in dump


def test_case13_binary_file_bytes_are_never_stored(sqlite_engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    (folder / "Observation.ndjson").write_bytes(b"\x7fELF\x02\x01\x01SECRET\x00\x00binary\n")
    summary = load(sqlite_engine, folder)
    assert summary.quarantined == 1
    assert rows(sqlite_engine, Quarantine.raw_snippet) == [(None,)]


# --- case 14: a byte-order mark, and a line too long to be one record ------------------------------


def test_case14_bom_before_the_first_ndjson_record_is_skipped(sqlite_engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    path = folder / "Patient.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summary = load(sqlite_engine, folder)
    assert summary.quarantined == 0 and count(sqlite_engine, Patient) == 1


def test_case14_bom_in_the_worker_chunk_path_is_skipped(tmp_path):
    from recruit.load.chunks import chunks

    path = fx.write_ndjson(tmp_path / "Patient.ndjson", [fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1])])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    staged = [stage_chunk(c, EXTRACT_DATE, {}) for c in chunks([path], chunk_bytes=64)]
    assert sum(len(s.rows.get("ld_patient", [])) for s in staged) == 2
    assert not any(s.quarantine for s in staged)


def test_case14_bom_before_a_json_bundle_is_skipped(sqlite_engine, tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (fx.organization(), fx.practitioner(), fx.patient())],
    }
    (folder / "bundle.json").write_bytes(b"\xef\xbb\xbf" + orjson.dumps(bundle))
    summary = load(sqlite_engine, folder)
    assert summary.quarantined == 0 and count(sqlite_engine, Patient) == 1


def test_case14_bom_before_a_csv_header_is_skipped(sqlite_engine, tmp_path):
    import yaml

    mapping = yaml.safe_load(SYNTH_MAPPING.read_text())
    mapping["encoding"] = "utf-8"  # a BOM must not become part of the first column's name
    plain = tmp_path / "mapping.yaml"
    plain.write_text(yaml.safe_dump(mapping))
    summary = load(sqlite_engine, _csv_extract(tmp_path / "csv", bom=True), format="csv", mapping=plain)
    assert summary.quarantined == 0 and count(sqlite_engine, Patient) == 1


def test_case14_long_line_is_skipped_in_pieces_keeping_line_numbers(tmp_path, monkeypatch):
    from recruit.load import chunks as C
    from recruit.load import files as F

    monkeypatch.setattr(C, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(F, "MAX_RECORD_BYTES", 1000)
    good = [orjson.dumps(fx.patient(f"p{i}", fx.NHS_NUMBERS[i])) for i in range(3)]
    long_line = b'{"resourceType": "Patient", "id": "' + b"x" * 5000 + b'"}'
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join([good[0], long_line, good[1], good[2]]) + b"\n")
    for chunk_bytes in (64, 300, 4 << 20):
        staged = [stage_chunk(c, EXTRACT_DATE, {}) for c in C.chunks([path], chunk_bytes=chunk_bytes)]
        lines = sorted(r[2] for s in staged for r in s.rows.get("ld_patient", []))
        assert lines == [1, 3, 4], chunk_bytes
        quarantined = [q for s in staged for q in s.quarantine]
        assert [(q[1], q[6]) for q in quarantined] == [(2, "unreadable")]
        assert "skipped without being read" in quarantined[0][7] and quarantined[0][8] is None
    # the single-file reader does the same
    records = list(F.read_fhir(path, 0))
    assert [(r.line, r.error is not None) for r in records] == [(1, False), (2, True), (3, False), (4, False)]


@pytest.mark.slow
def test_case14_a_300_mb_line_keeps_memory_under_500_mb(tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    obs = folder / "Observation.ndjson"
    with obs.open("wb") as f:
        f.write(orjson.dumps(fx.condition("c1")) + b"\n")
        f.write(b'{"resourceType": "Observation", "id": "big", "note": "')
        piece = b"y" * (1 << 20)
        for _ in range(300):
            f.write(piece)
        f.write(b'"}\n')
        f.write(orjson.dumps(fx.condition("c2", code="279039007")) + b"\n")
    db = tmp_path / "big.db"
    code = textwrap.dedent(
        f"""
        import datetime as dt
        from pathlib import Path
        from sqlalchemy import select
        from recruit.db import make_engine
        from recruit.migrate import upgrade
        from recruit.load import load_extract
        from recruit.models import Quarantine
        engine = make_engine("sqlite:///{db}")
        upgrade(engine)
        # One process: the long line is cut out by the chunker in the main process whatever the
        # number of workers, and one process's peak is all VmHWM below reads.
        s = load_extract(engine, [Path({str(folder)!r})], extract_date=dt.date(2026, 11, 1), workers=1)
        with engine.connect() as conn:
            q = conn.execute(select(Quarantine.file, Quarantine.line, Quarantine.reason)).all()
        # VmHWM, this process's own peak since it started: Linux carries the parent's peak
        # into ru_maxrss across fork and exec, so in a long test session ru_maxrss reports
        # pytest's size, not the load's.
        status = Path("/proc/self/status").read_text()
        peak = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))) / 1024
        print(peak, s.loaded, len(q), q[0][1], q[0][0].endswith("Observation.ndjson"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, loaded, quarantined, line, right_file = out.stdout.split()
    assert float(peak) < 500, f"peak memory {peak} MB"
    assert int(loaded) == 5  # organisation, GP, patient and the two good conditions
    assert (int(quarantined), int(line), right_file) == (1, 2, "True")


# --- case 12: a NUL or an over-long value quarantines its record, on SQLite and PostgreSQL --------


def test_case12_nul_and_overlong_names_are_quarantined_and_the_load_finishes(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    nul = fx.patient(
        "p2", fx.NHS_NUMBERS[1], name=[{"use": "official", "family": "Te\x00ster", "given": ["Al"]}]
    )
    long_name = "L" + "o" * 298 + "ng"
    overlong = fx.patient("p3", fx.NHS_NUMBERS[2], name=[{"use": "official", "family": long_name}])
    long_id = fx.patient("p" * 150, fx.NHS_NUMBERS[3])
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(), nul, overlong, long_id])
    fx.write_ndjson(
        folder / "Condition.ndjson", [fx.condition("c1"), fx.condition("c2", patient_ref="Patient/p2")]
    )
    summary = load(engine, folder)
    assert count(engine, Patient) == 1
    assert count(engine, ClinicalEvent) == 1  # p1's; p2's condition waits on its quarantined patient
    found = rows(
        engine, Quarantine.line, Quarantine.field, Quarantine.reason_code, Quarantine.reason, Quarantine.file
    )
    by_line = {r[0]: r for r in found if r[4].endswith("Patient.ndjson")}
    assert by_line[2][1:4] == ("name.family", "text_nul", "the value of name.family contains a NUL character")
    assert by_line[3][1:4] == (
        "name.family",
        "text_too_long",
        "the value of name.family is longer than 100 characters",
    )
    assert by_line[4][1:3] == ("id", "text_too_long")
    assert all(long_name not in r[3] and "Te" not in r[3] for r in found)
    assert summary.loaded + summary.quarantined == summary.read


def test_case12_quarantine_rows_never_fail_to_insert(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    broken = {"resourceType": "Patient", "id": "bad\x00" + "i" * 400, "birthDate": "1980-01-01"}
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(), broken])
    summary = load(engine, folder)
    assert summary.quarantined == 1 and count(engine, Patient) == 1
    [(rid,)] = rows(engine, Quarantine.resource_id)
    assert "\x00" not in rid and len(rid) <= 200


def test_case12_csv_values_are_checked_in_the_same_place(sqlite_engine, tmp_path):
    folder = _csv_extract(tmp_path / "csv")
    text = (folder / "patients.csv").read_text()
    (folder / "patients.csv").write_text(
        text + f"ZZ9001,{fx.NHS_NUMBERS[1]},SM\x00ITH,Jo,Male,01/05/1980,,1 Road,Town,ZZ1 1ZZ,01/01/2000,,\n"
    )
    summary = load(sqlite_engine, folder, format="csv", mapping=SYNTH_MAPPING)
    assert count(sqlite_engine, Patient) == 1 and summary.quarantined == 1
    assert rows(sqlite_engine, Quarantine.field, Quarantine.reason_code) == [("Surname", "text_nul")]


# --- case 9: the current name and address, by use and period, whatever their order ---------------


def _name(family: str, use: str | None = None, **extra) -> dict:
    out = {"family": family, "given": ["Pat"], **extra}
    if use:
        out["use"] = use
    return out


def _addr(first_line: str, use: str | None = None, **extra) -> dict:
    out = {"line": [first_line], "city": "Testtown", "postalCode": "ZZ1 1ZZ", **extra}
    if use:
        out["use"] = use
    return out


@pytest.mark.parametrize("reverse", [False, True])
def test_case9_old_and_maiden_names_are_never_chosen(reverse):
    names = [
        _name("Maiden", "maiden"),
        _name("Former", "old"),
        _name("Ended", "official", period={"start": "2000-01-01", "end": "2019-05-01"}),
        _name("Nick", "nickname"),
        _name("Current", "usual", period={"start": "2019-05-01"}),
    ]
    res = fx.patient(name=names[::-1] if reverse else names)
    assert reader().read(res).patients[0].family_name == "Current"


def test_case9_usual_name_is_preferred_and_no_usable_name_gives_none():
    res = fx.patient(name=[_name("Legal", "official"), _name("Known", "usual")])
    assert reader().read(res).patients[0].family_name == "Known"
    res = fx.patient(
        name=[_name("Maiden", "maiden"), _name("Future", "usual", period={"start": "2027-01-01"})]
    )
    assert reader().read(res).patients[0].family_name is None


@pytest.mark.parametrize("reverse", [False, True])
def test_case9_old_ended_future_work_and_billing_addresses_are_never_chosen(reverse):
    addresses = [
        _addr("1 Old Street", "old"),
        _addr("2 Ended Road", "home", period={"start": "2001", "end": "2024-06"}),
        _addr("3 Work Park", "work"),
        _addr("4 Billing Way", "billing"),
        _addr("5 Future Close", "home", period={"start": "2027-01-01"}),
        _addr("6 Home Lane", "home", period={"start": "2024-06-02"}),
        _addr("7 Temp Flat", "temp", period={"start": "2026-10-01", "end": "2026-12-31"}),
    ]
    res = fx.patient(address=addresses[::-1] if reverse else addresses)
    assert reader().read(res).patients[0].address == "6 Home Lane\nTesttown"


def test_case9_an_address_ending_on_the_extract_date_is_not_current():
    ends = _addr("2 Ending Road", "home", period={"end": EXTRACT_DATE.isoformat()})
    assert reader().read(fx.patient(address=[ends])).patients[0].address is None


def test_case9_home_then_no_use_then_current_temp():
    no_use = _addr("8 Plain Street")
    temp = _addr("7 Temp Flat", "temp", period={"start": "2026-10-01", "end": "2026-12-31"})
    assert reader().read(fx.patient(address=[temp, no_use])).patients[0].address == "8 Plain Street\nTesttown"
    assert reader().read(fx.patient(address=[temp])).patients[0].address == "7 Temp Flat\nTesttown"
    ended_temp = _addr("7 Temp Flat", "temp", period={"start": "2026-01-01", "end": "2026-02-01"})
    assert reader().read(fx.patient(address=[ended_temp])).patients[0].address is None


def test_case9_no_usable_current_address_stores_no_address(sqlite_engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    only_old = fx.patient(address=[_addr("1 Old Street", "old"), _addr("3 Work Park", "work")])
    fx.write_ndjson(folder / "Patient.ndjson", [only_old])
    summary = load(sqlite_engine, folder)
    assert summary.quarantined == 0
    assert rows(sqlite_engine, Patient.address, Patient.postcode) == [(None, None)]


def test_case9_practice_work_address_is_still_read():
    org = fx.organization()
    org["address"] = [_addr("1 High Street", "work"), _addr("9 Old Surgery", "old")]
    assert reader().read(org).orgs[0].address == "1 High Street\nTesttown"


# --- case 10: partial birth dates as a range; a value of the wrong type is never a default --------


@pytest.mark.parametrize(
    ("raw", "first", "last"),
    [
        ("2008", "2008-01-01", "2008-12-31"),
        ("2008-11", "2008-11-01", "2008-11-30"),
        ("2008-02", "2008-02-01", "2008-02-29"),
        ("2007-12", "2007-12-01", "2007-12-31"),
        ("2008-11-15", "2008-11-15", None),
        ("2026", "2026-01-01", "2026-11-01"),  # never later than the extract date
    ],
)
def test_case10_partial_birth_date_keeps_both_ends(raw, first, last):
    p = reader().read(fx.patient(birthDate=raw)).patients[0]
    assert (p.date_of_birth, p.date_of_birth_latest) == (first, last)


def test_case10_birth_date_checks_are_kept():
    for raw, code in (("2027", "date_in_future"), ("1850-03", "date_invalid"), ("11/2008", "date_invalid")):
        with pytest.raises(Invalid) as err:
            reader().read(fx.patient(birthDate=raw))
        assert (err.value.code, err.value.field) == (code, "birthDate")


def test_case10_partial_birth_date_reaches_the_database(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(birthDate="2008-11")])
    load(engine, folder)
    assert rows(engine, Patient.date_of_birth, Patient.date_of_birth_latest) == [
        (dt.date(2008, 11, 1), dt.date(2008, 11, 30))
    ]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"deceasedBoolean": "true"}, "deceasedBoolean"),
        ({"deceasedBoolean": 1}, "deceasedBoolean"),
        ({"deceasedDateTime": 20200101}, "deceasedDateTime"),
        ({"active": "false"}, "active"),
        ({"gender": 1}, "gender"),
        ({"birthDate": 19800501}, "birthDate"),
        ({"identifier": [{"system": fx.NHS, "value": 9990000018}]}, "identifier[0].value"),
        ({"name": [{"use": "official", "family": "Tester", "given": ["Pat", 7]}]}, "name.given[1]"),
        (
            {"address": [{"use": "home", "line": [["2 Low Road"]], "postalCode": "ZZ1 1ZZ"}]},
            "address.line[0]",
        ),
        ({"address": [{"use": "home", "line": ["2 Low Road"], "postalCode": 1234}]}, "address.postalCode"),
        (
            {"extension": [{"url": "https://example.org/InterpreterRequired", "valueBoolean": "yes"}]},
            "extension.valueBoolean",
        ),
    ],
)
def test_case10_wrong_typed_patient_values_are_quarantined_not_defaulted(extra, field):
    with pytest.raises(Invalid) as err:
        reader().read(fx.patient(**extra))
    assert (err.value.code, err.value.field) == ("wrong_type", field)


def test_case10_wrong_typed_record_values_are_quarantined():
    obs = fx.condition(
        resourceType="Observation", effectiveDateTime="2024-01-01", valueQuantity={"value": "12"}
    )
    del obs["onsetDateTime"]
    numeric_code = fx.condition()
    numeric_code["code"]["coding"][0]["code"] = 827241000000103
    for res, field in (
        (obs, "valueQuantity.value"),  # an observation's value is what rules compare
        (numeric_code, "code.coding[0].code"),
    ):
        with pytest.raises(Invalid) as err:
            reader().read(res)
        assert (err.value.code, err.value.field) == ("wrong_type", field)


@pytest.mark.parametrize(
    ("value", "quantity", "repaired"),
    [("100", 100.0, 1), (" 28.5 ", 28.5, 1), ("one pack", None, 0), (True, None, 0), ([28], None, 0)],
)
def test_case10_a_supply_quantity_no_rule_uses_is_never_a_reason_to_lose_the_prescription(
    value, quantity, repaired
):
    """The exception to case 10: dispenseRequest.quantity is not used by any rule, so a number
    written as text (GP Connect) is read as that number and counted as repaired, and anything
    else leaves the quantity unknown; never a default, never the prescription dropped."""
    r = reader()
    [m] = r.read(fx.med_request(dispenseRequest={"quantity": {"value": value}})).medications
    assert (m.code, m.quantity, r.dates.repaired) == ("322341003", quantity, repaired)


# --- case 15: counts and reasons are true; no identifier printed in full ---------------------------


def test_case15_record_of_a_quarantined_patient_says_so(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    bad = fx.patient("p2", fx.NHS_NUMBERS[1], birthDate="2099-01-01")  # quarantined while reading
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(), bad])
    obs = fx.condition(
        "o1", patient_ref="Patient/p2", resourceType="Observation", effectiveDateTime="2024-01-01"
    )
    del obs["onsetDateTime"]
    nobody = fx.condition("c3", patient_ref="Patient/nobody")
    fx.write_ndjson(folder / "Condition.ndjson", [fx.condition("c1"), obs, nobody])
    summary = load(engine, folder)
    found = dict(rows(engine, Quarantine.resource_id, Quarantine.reason_code))
    assert found == {"p2": "date_in_future", "o1": "patient_quarantined", "c3": "reference_dangling"}
    [(reason,)] = rows(engine, Quarantine.reason, where=Quarantine.resource_id == "o1")
    assert reason == (
        "This Observation belongs to a patient whose own record was quarantined "
        "(see that Patient's reason), so it cannot be placed."
    )
    assert summary.loaded == count(engine, Patient) + count(engine, ClinicalEvent) + 2  # + org and GP


def test_case15_csv_record_of_a_quarantined_patient_says_so(sqlite_engine, tmp_path):
    folder = _csv_extract(tmp_path / "csv")
    (folder / "patients.csv").write_text(
        (folder / "patients.csv").read_text().replace("01/05/1980", "31/02/1980")  # not a date
    )
    load(sqlite_engine, folder, format="csv", mapping=SYNTH_MAPPING)
    found = sorted(rows(sqlite_engine, Quarantine.resource_type, Quarantine.reason_code))
    assert found == [
        ("Event", "patient_quarantined"),
        ("Medication", "patient_quarantined"),
        ("Patient", "date_invalid"),
    ]


def test_case15_no_reason_or_listing_prints_an_nhs_number_in_full(tmp_path):
    from tests.helpers import run_cli

    folder = tmp_path / "in"
    fx.base_extract(folder)
    rejected = "9990000019"
    # An id like an NHS number, on a record quarantined (its birth date is in the future).
    later = fx.patient(rejected, rejected, birthDate="2099-01-01")
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(), later])
    db = f"sqlite:///{tmp_path / 'r.db'}"
    loaded = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path
    )
    assert loaded.returncode == 0, loaded.stderr
    listed = run_cli("quarantine", "list", "--db", db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert rejected not in listed.stdout and "after the extract date" in listed.stdout
    assert "********19" in listed.stdout
    assert f"In {(folder / 'Patient.ndjson').resolve()}:" in listed.stdout  # the full path
    out = tmp_path / "q.csv"
    assert run_cli("quarantine", "export", "--out", str(out), "--db", db, cwd=tmp_path).returncode == 0
    assert rejected not in out.read_text()
    engine = make_engine(db)
    [(reason,)] = rows(engine, Quarantine.reason)
    assert rejected not in reason
    engine.dispose()


def test_case15_malformed_record_reason_quotes_no_value():
    stager = Stager(DateReader(EXTRACT_DATE))
    res = fx.patient(name=[{"use": "official", "family": "Tester", "given": "Secretname"}])
    stager.record(Record(0, 1, res), 1)
    [q] = stager.out.quarantine
    assert "Secretname" not in str(q)


# --- case 2 (reading side): a broken record that signals death, leaving or a code is held ---------


def _stage(*resources: dict, extract_date: dt.date = EXTRACT_DATE):
    stager = Stager(DateReader(extract_date))
    for i, res in enumerate(resources, start=1):
        stager.record(Record(0, i, res), i)
    return stager.take()


def _holds(staged) -> list[tuple]:
    """(line, reason_code, patient_ref, nhs_number, source_id, signal, code_system, code)"""
    return [(h[2], h[4], *h[5:]) for h in staged.rows.get("ld_hold", [])]


def test_case2_broken_patient_that_signals_death_is_held():
    staged = _stage(
        fx.patient("p1", deceasedBoolean="true"),  # wrong type
        fx.patient("p2", fx.NHS_NUMBERS[1], deceasedDateTime="last week"),  # not a date
        # a bad NHS number (none) and a bad birth date: held by id
        fx.patient("p3", "9990000019", birthDate="nope", deceasedDateTime="2024-01-01"),
        fx.patient("p4", fx.NHS_NUMBERS[3], birthDate="1980-13-01", deceasedBoolean=False),  # no signal
    )
    assert len(staged.quarantine) == 4
    assert _holds(staged) == [
        (1, "wrong_type", None, fx.NHS_NUMBERS[0], "p1", "death", None, None),
        (2, "date_invalid", None, fx.NHS_NUMBERS[1], "p2", "death", None, None),
        (3, "date_invalid", None, None, "p3", "death", None, None),
    ]


def test_case2_broken_patient_that_signals_leaving_is_held():
    ended = [
        {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-UKCore-RegistrationDetails",
            "extension": [
                {"url": "registrationPeriod", "valuePeriod": {"start": "2001", "end": "2025-03-04"}}
            ],
        }
    ]
    staged = _stage(
        fx.patient("p1", active="false"),
        fx.patient("p2", fx.NHS_NUMBERS[1], birthDate="someday", extension=ended),
    )
    assert [(h[0], h[5]) for h in _holds(staged)] == [(1, "left"), (2, "left")]


def test_case2_broken_dissent_record_is_held_by_its_codes():
    dissent = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {
            "coding": [
                {"system": fx.SCT, "code": "827241000000103"},
                {"system": "http://read.info/readv2", "code": "9Nu0."},
                {"system": "http://loinc.org", "code": "1-8"},
            ]
        },
    }
    future = dissent | {"id": "o2", "effectiveDateTime": "2031-01-01"}
    numeric = dissent | {"id": "o3", "effectiveDateTime": "2024-01-01"}
    numeric["code"] = {"coding": [{"system": fx.SCT, "code": 827241000000103}]}
    no_subject = {k: v for k, v in dissent.items() if k != "subject"}
    condition = fx.condition("c1", onsetDateTime="not a date")
    staged = _stage(dissent, future, numeric, no_subject, condition)
    assert len(staged.quarantine) == 5
    assert _holds(staged) == [
        (1, "date_missing", "Patient/p1", None, None, "code", "snomedct", "827241000000103"),
        (1, "date_missing", "Patient/p1", None, None, "code", "readv2", "9Nu0."),
        (2, "date_in_future", "Patient/p1", None, None, "code", "snomedct", "827241000000103"),
        (2, "date_in_future", "Patient/p1", None, None, "code", "readv2", "9Nu0."),
        (3, "wrong_type", "Patient/p1", None, None, "code", "snomedct", "827241000000103"),
        (5, "date_invalid", "Patient/p1", None, None, "code", "snomedct", "82423001"),
    ]


def test_case2_patient_refused_for_a_text_value_is_still_held():
    res = fx.patient(name=[{"use": "official", "family": "Te\x00ster"}], deceasedDateTime="2025-01-01")
    staged = _stage(res)
    assert [q[6] for q in staged.quarantine] == ["text_nul"]
    assert _holds(staged) == [(1, "text_nul", None, fx.NHS_NUMBERS[0], "p1", "death", None, None)]


def test_case2_quarantined_patient_keys_are_staged():
    staged = _stage(
        fx.patient("p9", fx.NHS_NUMBERS[2], birthDate="nope"),
        fx.patient("p8", "9990000019", birthDate="nope"),  # no valid number: keyed by id only
    )
    assert sorted(staged.rows["ld_bad_patient_key"]) == [
        ("Patient/p8", 2),
        ("Patient/p9", 1),
        (f"nhs:{fx.NHS_NUMBERS[2]}", 1),
    ]


def test_case2_broken_csv_rows_are_held(sqlite_engine, tmp_path):
    folder = _csv_extract(tmp_path / "csv")
    (folder / "patients.csv").write_text(
        (folder / "patients.csv").read_text()
        + f"ZZ9001,{fx.NHS_NUMBERS[1]},DEAD,Al,Male,99/99/1980,soon,1 Road,Town,ZZ1 1ZZ,01/01/2000,,\n"
    )
    (folder / "events.csv").write_text(
        (folder / "events.csv").read_text()
        + f"{fx.NHS_NUMBERS[0]},31/02/2024,827241000000103,SNOMED CT,Dissent\n"
    )
    from recruit.load.csv_extract import CsvSource

    source = CsvSource([folder], SYNTH_MAPPING)
    stager = Stager(DateReader(EXTRACT_DATE))
    for record, parsed in source.records(stager.dates):
        stager.parsed(record, parsed)
    staged = stager.take()
    holds = [(h[3], h[4], *h[5:]) for h in staged.rows["ld_hold"]]
    assert holds == [
        ("Patient", "date_invalid", None, fx.NHS_NUMBERS[1], fx.NHS_NUMBERS[1], "death", None, None),
        (
            "Event",
            "date_invalid",
            f"nhs:{fx.NHS_NUMBERS[0]}",
            None,
            None,
            "code",
            "snomedct",
            "827241000000103",
        ),
    ]
    assert (f"nhs:{fx.NHS_NUMBERS[1]}", 2) in staged.rows["ld_bad_patient_key"]
    # and a whole load with held records finishes, on the database
    summary = load(sqlite_engine, folder, format="csv", mapping=SYNTH_MAPPING)
    assert summary.quarantined == 2 and count(sqlite_engine, Patient) == 1


def test_case2_load_with_held_records_finishes(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Patient.ndjson",
        [fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1], deceasedBoolean="true")],
    )
    dissent = fx.condition("c9", code="827241000000103", onsetDateTime="2031-01-01")
    fx.write_ndjson(folder / "Condition.ndjson", [fx.condition("c1"), dissent])
    summary = load(engine, folder)
    assert summary.quarantined == 2 and count(engine, Patient) == 1 and count(engine, ClinicalEvent) == 1


def test_case13_cli_refuses_a_fifo_with_a_plain_message(tmp_path):
    fifo = tmp_path / "Patient.ndjson"
    os.mkfifo(fifo)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("RECRUIT_DATABASE_URL", None)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "recruit",
                "load",
                "--create",
                str(fifo),
                "--db",
                db,
                "--extract-date",
                "2026-11-01",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:  # (subprocess.run has already killed it)
        pytest.fail("recruit load blocked on the FIFO")
    assert result.returncode != 0
    assert "named pipe" in result.stderr + result.stdout and "Traceback" not in result.stderr
