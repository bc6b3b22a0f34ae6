"""What a load tells staff about the extract as a whole (issue 18): counts per file (read =
stored + quarantined for each, not used apart), when a kind of record is split over several
files; coded entries and prescriptions per code system, naming a system the default rule set's
codelists have no codes in; and whether the extract was pseudonymised."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from recruit.cli_render import file_lines
from recruit.load import load_extract
from recruit.models import Extract, Patient
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx
from tests.integration.load.test_never_wrong_person_reader import _csv_extract

ROOT = Path(__file__).resolve().parents[3]
SYNTH_MAPPING = ROOT / "rules" / "mappings" / "synthetic_ehr.yaml"
WHEN = dt.date(2026, 11, 1)


def split_extract(folder: Path) -> Path:
    """One practice, two patients, coded entries split over two NDJSON files: the second file
    holds one entry of an unknown patient (quarantined) and one record of a kind recruit does
    not use."""
    fx.base_extract(folder)
    fx.write_ndjson(folder / "Patient_2.ndjson", [fx.patient("p2", fx.NHS_NUMBERS[1])])
    fx.write_ndjson(
        folder / "Condition_001.ndjson", [fx.condition("c1"), fx.condition("c2", "Patient/p2", "279039007")]
    )
    fx.write_ndjson(
        folder / "Condition_002.ndjson",
        [
            fx.condition("c3", "Patient/p2"),
            fx.condition("c4", "Patient/nobody"),
            {"resourceType": "Appointment", "id": "a1", "status": "booked"},
        ],
    )
    fx.write_ndjson(folder / "MedicationRequest.ndjson", [fx.med_request("m1")])
    return folder


def test_every_file_of_a_split_extract_has_its_own_counts(engine, tmp_path):
    summary = load_extract(engine, [split_extract(tmp_path / "x")], extract_date=WHEN)
    files = {Path(path).name: f for path, f in summary.by_file.items()}
    assert set(files) == {
        "Organization.ndjson",
        "Practitioner.ndjson",
        "Patient.ndjson",
        "Patient_2.ndjson",
        "Condition_001.ndjson",
        "Condition_002.ndjson",
        "MedicationRequest.ndjson",
    }
    first, second = files["Condition_001.ndjson"], files["Condition_002.ndjson"]
    assert (first.read, first.stored, first.quarantined, first.not_used) == (2, 2, 0, 0)
    assert (second.read, second.stored, second.quarantined, second.not_used) == (2, 1, 1, 1)
    assert second.kinds == ["Condition"]
    for f in files.values():
        assert f.read == f.stored + f.quarantined
    assert sum(f.read for f in files.values()) == summary.read
    assert sum(f.quarantined for f in files.values()) == summary.quarantined
    assert sum(f.not_used for f in files.values()) == sum(summary.not_used.values())
    # Printed for the kinds split over files only (Patient, Condition), not for the others.
    lines = file_lines(summary)
    assert lines[0].startswith("by file")
    shown = "\n".join(lines)
    assert "Condition_002.ndjson  read 2, stored 1, quarantined 1, not used 1" in shown
    assert "Patient_2.ndjson" in shown and "MedicationRequest" not in shown and "Organization" not in shown


def test_one_file_per_kind_prints_no_file_lines(engine, tmp_path):
    summary = load_extract(engine, fx.base_extract(tmp_path / "x"), extract_date=WHEN)
    assert len(summary.by_file) == 3 and file_lines(summary) == []


def ctv3_only_rules(folder: Path) -> None:
    """A ./rules folder whose instep.yaml reads one codelist, in CTV3 codes only."""
    codelists = folder / "rules" / "codelists"
    codelists.mkdir(parents=True)
    (codelists / "codelists.yaml").write_text(
        "codelists:\n- name: pain\n  file: pain.csv\n  version: test\n", encoding="utf-8"
    )
    (codelists / "pain.csv").write_text("code,system,term,source\nXE1aB,ctv3,Pain,test\n", encoding="utf-8")
    (folder / "rules" / "instep.yaml").write_text(
        "name: ctv3 only\nversion: '1'\nsteps:\n"
        "- id: pain\n  kind: include\n  reason: pain\n  criterion:\n    has_code: {codelist: pain}\n",
        encoding="utf-8",
    )


def test_code_systems_are_counted_and_one_no_codelist_covers_is_named(engine, tmp_path, monkeypatch):
    extract = split_extract(tmp_path / "x")
    ctv3_only_rules(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    summary = load_extract(engine, [extract], extract_date=WHEN)
    assert summary.coded_by_system == {"snomedct": 3}
    assert summary.prescribed_by_system == {"dmd": 1}
    assert summary.rule_set == "ctv3 only" and summary.uncovered_systems == ["dmd", "snomedct"]


def test_the_shipped_rule_set_covers_every_system(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./rules: recruit's own rule set
    summary = load_extract(engine, [split_extract(tmp_path / "x")], extract_date=WHEN)
    assert summary.coded_by_system == {"snomedct": 3} and summary.uncovered_systems == []


def test_the_load_command_prints_file_counts_and_uncovered_code_systems(sqlite_url, tmp_path):
    extract = split_extract(tmp_path / "x")
    ctv3_only_rules(tmp_path)
    done = run_cli(
        "load", str(extract), "--extract-date", WHEN.isoformat(), "--db", sqlite_url, "--create", cwd=tmp_path
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "by file (read = stored + quarantined):" in said
    assert "Condition_001.ndjson  read 2, stored 2, quarantined 0" in said
    assert "coded entries by code system: SNOMED CT 3" in said
    assert (
        "3 coded entries are SNOMED CT codes; no codelist of ctv3 only has SNOMED CT codes, "
        "so searches cannot find them" in said
    )
    assert "Traceback" not in said


def test_a_pseudonymised_mapping_marks_the_extract_and_its_patients(engine, tmp_path):
    """Until the new mapping language lands, the old one with `pseudonymised: true` (its rows
    still joined by NHS number) stands in for a CPRD, OpenSAFELY or OMOP extract."""
    mapping = tmp_path / "pseudonymised.yaml"
    mapping.write_text("pseudonymised: true\n" + SYNTH_MAPPING.read_text(encoding="utf-8"), encoding="utf-8")
    summary = load_extract(engine, [_csv_extract(tmp_path / "csv")], mapping=mapping, extract_date=WHEN)
    fhir = load_extract(engine, fx.base_extract(tmp_path / "fhir"), extract_date=WHEN)
    assert summary.pseudonymised and not fhir.pseudonymised
    with engine.connect() as conn:
        extracts = dict(conn.execute(select(Extract.id, Extract.pseudonymised)).all())
        patients = conn.execute(select(Patient.extract_id, Patient.pseudonymised)).all()
    assert extracts == {summary.extract_id: True, fhir.extract_id: False}
    assert sorted(patients) == sorted([(summary.extract_id, True), (fhir.extract_id, False)])
