"""The mapping language's reader, shape by feature: split tables, keys, lookups, detail tables,
row filters, missing-value tokens, dates in parts, fill-down. Shapes have their own tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from recruit.errors import RecruitError
from recruit.load.loader import load_extract

EXTRACT_DATE = dt.date(2026, 11, 1)
NHS = ["9990000018", "9990000026", "9990000034"]

MAPPING = """
name: test extract
encoding: utf-8
missing: [NA]
date_formats: ["%Y-%m-%d", "%d %b %Y %H:%M:%S"]
lookups:
  clinical:
    file: "Coding_Clinical*.csv"
    key: CodeId
    values: {snomedct: ConceptId, term: Term}
    describe: the extract's clinical code table
  orgs:
    file: "Organisation.csv"
    key: OrgId
    values: {ods: ODS}
patients:
  file: "Patient*.csv"
  skip_rows: [{column: Deleted, values: ["true"], reason: "deleted in the clinical system"}]
  columns:
    patient: Id
    nhs_number: NHS
    date_of_birth: {year: YearOfBirth, month: MonthOfBirth}
    practice_ods: {column: OrgId, lookup: orgs, take: ods}
    family_name: Surname
    usual_gp: Gp
registrations:
  file: "Registration*.csv"
  registration_types: [Regular]
  columns: {patient: Id, start: Start, end: End, type: Type}
addresses:
  file: "Address*.csv"
  columns: {patient: Id, address: [Line1, Town], postcode: Postcode, start: From, end: To}
deaths:
  file: "Death*.csv"
  columns: {patient: Id, date: Died}
events:
  - file: "Observation_*.csv"
    columns:
      patient: Id
      date: Date
      codes: [{column: CodeId, lookup: clinical}]
  - file: "Code*.csv"
    columns:
      patient: Id
      date: Date
      codes: [{column: CTV3, system: ctv3}, {column: Snomed, system: snomedct}]
medications:
  file: "Issue*.csv"
  columns:
    patient: Id
    date: Date
    codes: [{column: Dmd, system: dmd}]
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")
    return folder


def _extract(tmp_path: Path, **changes: str) -> tuple[Path, Path]:
    files = {
        "Coding_Clinical.csv": "CodeId,ConceptId,Term\n1001,22298006,Heart attack\n1002,,No SNOMED\n",
        "Organisation.csv": "OrgId,ODS\n{A},A81001\n",
        "Patient.csv": (
            "Id,NHS,YearOfBirth,MonthOfBirth,OrgId,Surname,Gp,Deleted\n"
            f'P1,{NHS[0]},1980,5,{{A}},SMITH,"JONES, Ann (Dr)",false\n'
            f"P2,{NHS[1]},1975,NA,{{A}},Brown,,false\n"
            f"P3,{NHS[2]},1990,1,{{A}},Gone,,true\n"
            "P4,,1985,2,{A},NoNumber,,false\n"
        ),
        "Registration.csv": (
            "Id,Start,End,Type\n"
            "P1,2001-01-01,2005-01-01,Regular\n"
            "P1,2010-03-01,,Regular\n"
            "P1,2024-01-01,2024-02-01,Temporary\n"
            "P2,2000-01-01,,Regular\n"
            "P9,2000-01-01,,Regular\n"
        ),
        "Address.csv": (
            "Id,Line1,Town,Postcode,From,To\n"
            "P1,1 Old Road,Oldtown,ZZ1 1ZZ,2001-01-01,2010-01-01\n"
            "P1,2 New Road,Newtown,zz2 2zz,2010-01-01,\n"
            "P2,3 Lane,Town,ZZ3 3ZZ,2000-01-01,\n"
        ),
        "Death.csv": "Id,Died\nP2,2026-06-01\nP2,2026-07-01\n",
        "Observation_001.csv": "Id,Date,CodeId\nP1,2025-01-01,1001\nP1,2025-02-01,9999\n",
        "Observation_002.csv": "Id,Date,CodeId\nP2,2025-03-01,1001\nP1,2025-04-01,1002\nP1,not a date,1001\n",
        "Code.csv": (
            "Id,Date,CTV3,Snomed\n"
            "P1,01 Mar 2025 10:15:00,XE0Ua,22298006\n"
            "P1,02 Mar 2025 10:15:00,,22298007\n"
            "P7,02 Mar 2025 10:15:00,XE0Ua,\n"
        ),
        "Issue.csv": "Id,Date,Dmd\nP1,2025-05-01,39695211000001102\nP1,2025-05-02,\n",
    }
    files.update({name: body for name, body in changes.items() if body})
    for name in [n for n, b in changes.items() if not b]:
        files.pop(name)
    folder = _write(tmp_path / "extract", files)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    return folder, mapping


def _quarantine(engine) -> list[tuple[str, int, str, str]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT file, line, field, reason_code FROM quarantine ORDER BY file, line"))
        return [(Path(f).name, line, field, code) for f, line, field, code in rows]


def test_every_row_of_every_file_is_stored_or_quarantined_or_counted(sqlite_engine, tmp_path):
    folder, mapping = _extract(tmp_path)
    summary = load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    assert summary.read == summary.loaded + summary.quarantined
    # Both parts of the split table were read.
    files = {Path(p).name for p in summary_paths(sqlite_engine)}
    assert {"Observation_001.csv", "Observation_002.csv"} <= files
    assert _quarantine(sqlite_engine) == [
        ("Code.csv", 3, "Snomed", "code_malformed"),
        ("Code.csv", 4, "Id", _unknown_code()),
        ("Issue.csv", 3, "Dmd", "code_missing"),
        ("Observation_001.csv", 3, "CodeId", "code_not_in_lookup"),
        ("Observation_002.csv", 3, "CodeId", "code_untranslated"),
        ("Observation_002.csv", 4, "Date", "date_invalid"),
        ("Registration.csv", 6, "Id", "patient_unknown"),
    ]
    # A deleted row, earlier registrations and addresses, a temporary registration and a
    # repeated death are counted as not used, with their reasons.
    assert summary.not_used["Patient row deleted in the clinical system"] == 1
    assert summary.not_used["Registration of another type (not for GP services)"] == 1
    assert summary.not_used["Registration of an earlier period (the latest was used)"] == 1
    assert summary.not_used["Address that ended before the extract (an earlier address)"] == 1
    assert summary.not_used["Death record repeated (the earliest date was used)"] == 1


def _unknown_code() -> str:
    """What the loader calls a record whose patient the extract does not have."""
    return "reference_dangling"


def summary_paths(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        value = conn.execute(text("SELECT source_paths FROM extract")).scalar_one()
    return json.loads(value) if isinstance(value, str) else list(value)


def test_rows_keyed_by_the_extracts_own_id_join_with_details(sqlite_engine, tmp_path):
    folder, mapping = _extract(tmp_path)
    load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    with sqlite_engine.connect() as conn:
        patients = conn.execute(
            text(
                "SELECT source_id, nhs_number, family_name, date_of_birth, date_of_birth_latest, "
                "address, postcode, registration_start, registration_end, date_of_death FROM patient "
                "ORDER BY source_id"
            )
        ).all()
        events = conn.execute(
            text(
                "SELECT p.source_id, e.code_system, e.code FROM clinical_event e JOIN patient p "
                "ON p.id = e.patient_id ORDER BY e.event_date, e.code_system"
            )
        ).all()
        gp = conn.execute(text("SELECT title, given_name, family_name FROM practitioner")).all()
        meds = conn.execute(text("SELECT code_system, code FROM medication_issue")).all()
        practice = conn.execute(text("SELECT ods_code FROM practice")).scalars().all()
    by_id = {p[0]: p for p in patients}
    assert set(by_id) == {"P1", "P2", "P4"}  # P3 deleted
    p1 = by_id["P1"]
    assert p1[1] == NHS[0] and p1[2] == "Smith"
    assert (str(p1[3]), str(p1[4])) == ("1980-05-01", "1980-05-31")  # year and month of birth
    assert p1[5] == "2 New Road\nNewtown" and p1[6] == "ZZ2 2ZZ"  # the current address
    assert (str(p1[7]), p1[8]) == ("2010-03-01", None)  # latest regular registration
    p2 = by_id["P2"]
    assert (str(p2[3]), str(p2[4])) == ("1975-01-01", "1975-12-31")  # NA month: the year only
    assert str(p2[9]) == "2026-06-01"  # the earliest death recorded
    assert by_id["P4"][1] is None  # no NHS number: stored, never written to
    assert events == [
        ("P1", "snomedct", "22298006"),
        ("P1", "ctv3", "XE0Ua"),
        ("P1", "snomedct", "22298006"),
        ("P2", "snomedct", "22298006"),
    ]
    assert gp == [("Dr", "Ann", "Jones")]
    assert meds == [("dmd", "39695211000001102")]
    assert practice == ["A81001"]


def test_a_missing_lookup_file_is_refused_saying_what_it_is(sqlite_engine, tmp_path):
    folder, mapping = _extract(tmp_path, **{"Coding_Clinical.csv": ""})
    with pytest.raises(RecruitError, match="the extract's clinical code table") as caught:
        load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    assert "nothing was loaded" in str(caught.value)


def test_a_lookup_given_as_its_own_path_is_used(sqlite_engine, tmp_path):
    folder, mapping = _extract(tmp_path, **{"Coding_Clinical.csv": ""})
    dictionary = _write(
        tmp_path / "licensed", {"Coding_Clinical_2026.csv": "CodeId,ConceptId,Term\n1001,22298006,X\n"}
    )
    summary = load_extract(
        sqlite_engine,
        [folder, dictionary / "Coding_Clinical_2026.csv"],
        format="csv",
        mapping=mapping,
        extract_date=EXTRACT_DATE,
    )
    assert summary.read == summary.loaded + summary.quarantined


def test_one_id_with_two_meanings_in_a_lookup_is_not_guessed(sqlite_engine, tmp_path):
    folder, mapping = _extract(
        tmp_path,
        **{"Coding_Clinical.csv": "CodeId,ConceptId,Term\n1001,22298006,A\n1001,1082551000000105,B\n"},
    )
    load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    reasons = {(f, line): code for f, line, _, code in _quarantine(sqlite_engine)}
    assert reasons[("Observation_001.csv", 2)] == "code_lookup_conflict"


def test_a_code_column_that_does_not_say_what_it_holds_is_refused(tmp_path):
    from recruit.load.mapping import load_mapping

    path = tmp_path / "m.yaml"
    path.write_text(
        MAPPING.replace("codes: [{column: CodeId, lookup: clinical}]", "codes: [{column: CodeId}]")
    )
    with pytest.raises(RecruitError, match="must say what its codes are"):
        load_mapping(path)
    path.write_text(
        MAPPING.replace(
            "      patient: Id\n      date: Date\n      codes: [{column: CodeId",
            "      date: Date\n      codes: [{column: CodeId",
        )
    )
    with pytest.raises(RecruitError, match="names no `patient` column"):
        load_mapping(path)


def test_blank_cells_meaning_same_as_above_are_filled_when_the_mapping_says(sqlite_engine, tmp_path):
    folder = _write(
        tmp_path / "report",
        {
            "patients.csv": f"NHS Number,Date of Birth\n{NHS[0]},01/01/1980\n{NHS[1]},01/01/1981\n",
            "events.csv": (
                "NHS Number,Date,Code\n"
                f"{NHS[0]},01/01/2025,22298006\n"
                ",02/01/2025,1082551000000105\n"
                f"{NHS[1]},03/01/2025,22298006\n"
            ),
        },
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "name: report\npractice_ods: A81001\npatients:\n  file: patients.csv\n"
        "  columns: {nhs_number: NHS Number, date_of_birth: Date of Birth}\n"
        "events:\n  file: events.csv\n  fill_down: [NHS Number]\n"
        "  columns: {nhs_number: NHS Number, date: Date, codes: [{column: Code, system: snomedct}]}\n"
    )
    summary = load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0
    with sqlite_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.nhs_number, e.code FROM clinical_event e JOIN patient p ON p.id = e.patient_id "
                "ORDER BY e.event_date"
            )
        ).all()
    assert rows == [(NHS[0], "22298006"), (NHS[0], "1082551000000105"), (NHS[1], "22298006")]


def test_the_readme_worked_example_loads(sqlite_engine, tmp_path):
    """The mapping the README shows works as it says, on files shaped as it describes."""
    readme = (Path(__file__).parents[4] / "README.md").read_text()
    start = readme.index("name: My practice's search report")
    example = readme[start : readme.index("```", start)]
    mapping = tmp_path / "mine.yaml"
    mapping.write_text(example)
    folder = _write(
        tmp_path / "report",
        {
            "Patients.csv": (
                "ID,NHS Number,DOB,Practice,Usual GP\n"
                f'1,{NHS[0]},01/02/1980,A81001,"SMITH, Anne (Dr)"\n'
                f"2,{NHS[1]},NULL,A81001,Dr A Smith\n"
            ),
            "Codes 1.csv": (
                "ID,Date,Read Code,SNOMED\n"
                "1,03 Mar 2024 10:15:00,N245.,NULL\n"
                ",04 Mar 2024 10:15:00,NULL,22298006\n"
            ),
            "Codes 2.csv": "ID,Date,Read Code,SNOMED\n,05 Mar 2024 10:15:00,NULL,22298006\n",
        },
    )
    summary = load_extract(sqlite_engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
    # A blank ID at the top of a file has no row above it: not filled from another file.
    assert (summary.read, summary.loaded) == (5, 3)
    assert _quarantine(sqlite_engine) == [
        ("Codes 2.csv", 2, "ID", "patient_missing"),
        ("Patients.csv", 3, "DOB", "date_missing"),
    ]
    with sqlite_engine.connect() as conn:
        codes = conn.execute(text("SELECT code_system, code FROM clinical_event ORDER BY event_date")).all()
    assert codes == [("readv2", "N245."), ("snomedct", "22298006")]


def test_a_shipped_mapping_is_found_by_its_name_and_suggested_when_none_is_given(sqlite_engine, tmp_path):
    """A practice's staff type `--mapping emis_extract.yaml`; with no mapping, the refusal names
    the shipped mapping whose files these are."""
    emis = Path(__file__).parent / "fixtures" / "emis"
    with pytest.raises(RecruitError, match="try --mapping emis_extract.yaml"):
        load_extract(sqlite_engine, [emis], extract_date=EXTRACT_DATE)
    summary = load_extract(
        sqlite_engine, [emis], format="csv", mapping=Path("emis_extract.yaml"), extract_date=EXTRACT_DATE
    )
    assert summary.read == summary.loaded + summary.quarantined and summary.loaded > 0
