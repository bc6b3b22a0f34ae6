"""Loading whole extracts: every record loaded or quarantined with a reason, atomically."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import orjson
import pytest
from sqlalchemy import insert, select

import synthetic_ehr
from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load.quarantine import export_quarantine
from recruit.migrate import upgrade
from recruit.models import (
    ClinicalEvent,
    Extract,
    Invitation,
    MedicationIssue,
    Patient,
    Practice,
    Practitioner,
    Quarantine,
    SearchRun,
    Study,
)
from tests.integration.load import fhir_samples as fx
from tests.integration.load.db_helpers import count

ROOT = Path(__file__).resolve().parents[3]
SYNTH_MAPPING = ROOT / "rules" / "mappings" / "synthetic_ehr.yaml"
EXTRACT_DATE = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthetic_ehr.generate(out, practices=2, patients=400, seed=11, workers=1)
    return out


def ndjson_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _patients_by_nhs(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Patient.nhs_number,
                Patient.family_name,
                Patient.date_of_birth,
                Patient.postcode,
                Patient.date_of_death,
                Patient.registration_start,
                Patient.registration_end,
                Practice.ods_code,
            ).join(Practice, Practice.id == Patient.practice_id)
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.mark.parametrize("shape", ["ndjson", "bundles", "csv"])
def test_database_holds_exactly_what_the_generator_wrote(engine, synth, shape):
    paths = {"ndjson": synth / "fhir", "bundles": synth / "bundles", "csv": synth / "csv"}[shape]
    summary = load_extract(engine, [paths], mapping=SYNTH_MAPPING, extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    assert summary.loaded == summary.read

    patients = ndjson_lines(synth / "fhir" / "Patient.ndjson")
    conditions = ndjson_lines(synth / "fhir" / "Condition.ndjson")
    observations = ndjson_lines(synth / "fhir" / "Observation.ndjson")
    prescriptions = ndjson_lines(synth / "fhir" / "MedicationRequest.ndjson")
    assert count(engine, Patient) == len(patients)
    assert count(engine, ClinicalEvent) == sum(len(r["code"]["coding"]) for r in conditions + observations)
    assert count(engine, MedicationIssue) == len(prescriptions)
    assert count(engine, Practice) == 2

    # Patient by patient, the fields the engine relies on.
    loaded = _patients_by_nhs(engine)
    for res in patients[::7]:
        nhs = res["identifier"][0]["value"]
        family, dob, postcode, death, reg_start, reg_end, ods = loaded[nhs]
        assert family.lower() == res["name"][0]["family"].lower()
        assert dob.isoformat() == res["birthDate"]
        assert postcode == res["address"][0]["postalCode"]
        assert (death.isoformat() if death else None) == res.get("deceasedDateTime")
        period = res["extension"][0]["extension"][0]["valuePeriod"]
        assert reg_start.isoformat() == period["start"]
        assert (reg_end.isoformat() if reg_end else None) == period.get("end")
        assert ods == res["managingOrganization"]["reference"].split("/")[1]


def test_loading_the_same_extract_again_changes_nothing(engine, synth):
    first = load_extract(engine, [synth / "fhir"])
    before = (count(engine, Patient), count(engine, ClinicalEvent), count(engine, Extract))
    again = load_extract(engine, [synth / "fhir"])
    assert again.already_loaded and again.extract_id == first.extract_id
    assert (count(engine, Patient), count(engine, ClinicalEvent), count(engine, Extract)) == before


def test_newer_extract_replaces_the_practice_records_and_keeps_history(engine, tmp_path):
    first = tmp_path / "first"
    fx.base_extract(first)
    fx.write_ndjson(first / "Patient.ndjson", [fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1])])
    fx.write_ndjson(first / "Condition.ndjson", [fx.condition(), fx.condition("c2", "Patient/p2")])
    load_extract(engine, [first], extract_date=EXTRACT_DATE)
    with engine.begin() as conn:
        pid = conn.execute(select(Patient.id).where(Patient.source_id == "p1")).scalar_one()
        study = conn.execute(insert(Study).values(code="t", title="T").returning(Study.id)).scalar_one()
        run = conn.execute(
            insert(SearchRun)
            .values(
                rule_set_name="r", rule_set_version="1", rule_set_fingerprint="x", index_date=EXTRACT_DATE
            )
            .returning(SearchRun.id)
        ).scalar_one()
        conn.execute(
            insert(Invitation).values(
                study_id=study, patient_id=pid, nhs_number=fx.NHS_NUMBERS[0], run_id=run, study_number="T-1"
            )
        )

    second = tmp_path / "second"
    fx.base_extract(second)
    fx.write_ndjson(
        second / "Patient.ndjson", [fx.patient(family="Renamed") | {"name": [{"family": "Renamed"}]}]
    )
    fx.write_ndjson(second / "Condition.ndjson", [fx.condition("c9", code="203082005")])
    summary = load_extract(engine, [second], extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0

    with engine.connect() as conn:
        assert conn.execute(select(Patient.family_name).where(Patient.id == pid)).scalar_one() == "Renamed"
        assert conn.execute(select(ClinicalEvent.code)).scalars().all() == ["203082005"]
        assert conn.execute(select(Invitation.patient_id)).scalar_one() == pid
        # p2 is no longer in the practice's latest extract: kept for history, marked by its extract.
        latest = conn.execute(select(Practice.extract_id)).scalar_one()
        p2_extract, p2_end = conn.execute(
            select(Patient.extract_id, Patient.registration_end).where(Patient.source_id == "p2")
        ).one()
        assert p2_extract != latest
        assert p2_end == EXTRACT_DATE  # no longer on the list: registration ended by the new extract
        p1_end = conn.execute(select(Patient.registration_end).where(Patient.id == pid)).scalar_one()
        assert p1_end is None
        assert count(engine, Practitioner) == 1


BROKEN = {
    "truncated_json": (b'{"resourceType": "Condition", "id": "c1", "subject": {"ref', "unreadable", None),
    "wrong_type": (orjson.dumps(fx.condition(code="82423001") | {"code": "82423001"}), "wrong_type", "code"),
    "nhs_number_not_text": (
        orjson.dumps(fx.patient("p2", {"value": "9990000026"})),
        "wrong_type",
        "identifier[0].value",
    ),
    "future_date": (
        orjson.dumps(fx.condition(onsetDateTime="2031-01-01")),
        "date_in_future",
        "onsetDateTime",
    ),
    "before_birth": (orjson.dumps(fx.condition(onsetDateTime="1970-01-01")), "before_birth", "date"),
    "dangling_reference": (
        orjson.dumps(fx.condition(patient_ref="Patient/nobody")),
        "reference_dangling",
        "subject",
    ),
    "duplicate_id": (
        orjson.dumps(fx.condition("c1"))
        + b"\n"
        + orjson.dumps(fx.condition("c1", onsetDateTime="2024-05-05")),
        "duplicate_id",
        "id",
    ),
    "non_utf8": (b'{"resourceType": "Condition", "id": "c1", "note": "caf\xe9"}', "unreadable", None),
    "not_an_object": (b"[1, 2, 3]", "not_a_resource", None),
    "huge_line": (b'{"resourceType": "Observation", "x": "' + b"a" * 50_000_000, "unreadable", None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_is_quarantined_with_a_reason(sqlite_url, tmp_path, case):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    payload, code, field = BROKEN[case]
    fx.base_extract(tmp_path)
    (tmp_path / "Broken.ndjson").write_bytes(payload + b"\n")
    summary = load_extract(engine, [tmp_path], extract_date=EXTRACT_DATE)
    assert summary.loaded + summary.quarantined == summary.read
    with engine.connect() as conn:
        rows = conn.execute(select(Quarantine.__table__)).all()
    assert [r.reason_code for r in rows][:1] == [code], [r.reason for r in rows]
    row = rows[0]
    assert row.file.endswith("Broken.ndjson") and row.line in (1, 2)
    assert row.field == field
    assert row.reason
    assert count(engine, Patient) == 1  # the good records still load


def test_an_empty_extract_is_one_clear_error(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    (tmp_path / "Patient.ndjson").write_bytes(b"")
    with pytest.raises(RecruitError, match="empty"):
        load_extract(engine, [tmp_path])
    assert count(engine, Extract) == 0  # nothing half-written


def test_strict_mode_quarantines_what_full_validation_rejects(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    fx.base_extract(tmp_path)
    # status is required by FHIR but not read by recruit: only --strict notices it is missing.
    fx.write_ndjson(tmp_path / "MedicationRequest.ndjson", [fx.med_request() | {"status": None}])
    relaxed = load_extract(engine, [tmp_path], extract_date=EXTRACT_DATE)
    assert relaxed.quarantined == 0
    engine2 = make_engine(sqlite_url.replace("recruit.db", "strict.db"))
    upgrade(engine2)
    strict = load_extract(engine2, [tmp_path], extract_date=EXTRACT_DATE, strict=True)
    assert strict.quarantined_by_reason == {"fhir_invalid": 1}


def test_quarantine_export_neutralises_formulas(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    fx.base_extract(tmp_path / "in")
    fx.write_ndjson(
        tmp_path / "in" / "Condition.ndjson", [fx.condition(id="=HYPERLINK(1)", onsetDateTime="bad")]
    )
    load_extract(engine, [tmp_path / "in"], extract_date=EXTRACT_DATE)
    out = tmp_path / "q.csv"
    assert export_quarantine(engine, out) == 1
    row = list(csv.DictReader(out.open()))[0]
    assert row["resource_id"] == "'=HYPERLINK(1)"


def test_duplicate_patients_keep_the_first(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    fx.base_extract(tmp_path)
    fx.write_ndjson(
        tmp_path / "Patient.ndjson",
        [
            fx.patient("p1", fx.NHS_NUMBERS[0]),
            fx.patient("p1", fx.NHS_NUMBERS[1]),  # same id again
            fx.patient("p3", fx.NHS_NUMBERS[0]),  # same NHS number and birth date as p1: joined
            fx.patient("p5", fx.NHS_NUMBERS[2], birthDate="1990-01-01"),  # number of p4, born later
            fx.patient("p4", fx.NHS_NUMBERS[2]),
        ],
    )
    summary = load_extract(engine, [tmp_path], extract_date=EXTRACT_DATE)
    assert summary.quarantined_by_reason == {"duplicate_id": 1, "duplicate_nhs_number": 1}
    assert summary.same_person == 1
    with engine.connect() as conn:
        kept = conn.execute(select(Patient.source_id, Patient.nhs_number).order_by(Patient.source_id)).all()
    assert kept == [("p1", fx.NHS_NUMBERS[0]), ("p5", fx.NHS_NUMBERS[2])]


def _content(engine) -> dict[str, list[tuple]]:
    """Everything a load writes, without the database's own ids, in a stable order."""
    with engine.connect() as conn:
        nhs = {pid: n for pid, n in conn.execute(select(Patient.id, Patient.nhs_number))}
        patients = conn.execute(
            select(Patient.__table__).with_only_columns(
                *[c for c in Patient.__table__.columns if c.name not in ("id", "extract_id", "usual_gp_id")]
            )
        ).all()
        events = [
            (nhs[r[0]], *r[1:])
            for r in conn.execute(
                select(
                    ClinicalEvent.patient_id,
                    ClinicalEvent.event_date,
                    ClinicalEvent.code_system,
                    ClinicalEvent.code,
                    ClinicalEvent.term,
                    ClinicalEvent.value,
                    ClinicalEvent.source_resource_id,
                )
            )
        ]
        meds = [
            (nhs[r[0]], *r[1:])
            for r in conn.execute(
                select(
                    MedicationIssue.patient_id,
                    MedicationIssue.issue_date,
                    MedicationIssue.code,
                    MedicationIssue.quantity,
                    MedicationIssue.course,
                    MedicationIssue.source_resource_id,
                )
            )
        ]
        quarantined = conn.execute(
            select(
                Quarantine.file,
                Quarantine.line,
                Quarantine.resource_type,
                Quarantine.resource_id,
                Quarantine.field,
                Quarantine.reason_code,
            )
        ).all()
    key = lambda row: tuple("" if v is None else str(v) for v in row)  # noqa: E731
    return {
        name: sorted((tuple(r) for r in rows), key=key)
        for name, rows in [("patients", patients), ("events", events), ("meds", meds), ("q", quarantined)]
    }


@pytest.mark.parametrize("shape", ["fhir", "bundles"])
def test_reading_on_several_cores_loads_the_same_as_one(db_url, synth, tmp_path, shape, monkeypatch):
    """Cut into many small chunks read by two worker processes, the extract loads exactly as
    when read in this process: same rows, same quarantine, same first-of-duplicates kept."""
    import shutil

    from recruit.load import chunks

    folder = tmp_path / shape
    shutil.copytree(synth / shape, folder)
    broken = [
        b'{"resourceType": "Condition", "id": "cut-short", "subj',
        orjson.dumps(fx.condition("dangling", patient_ref="Patient/nobody")),
    ]
    target = next(p for p in sorted(folder.glob("*.ndjson")) if p.name != "log.ndjson")
    lines = target.read_bytes().splitlines()
    # A repeated record late in the file: whichever chunk reads it, the first one must be kept.
    target.write_bytes(b"\n".join([*lines, *broken, lines[0]]) + b"\n")

    results = []
    for n, workers in enumerate((1, 2)):
        monkeypatch.setattr(chunks, "CHUNK_BYTES", 1 << 20 if workers == 1 else 20_000)
        url = db_url if n == 0 else f"sqlite:///{tmp_path / 'second.db'}"
        engine = make_engine(url)
        upgrade(engine)
        summary = load_extract(engine, [folder], workers=workers, extract_date=EXTRACT_DATE)
        results.append((summary.read, summary.loaded, dict(summary.quarantined_by_reason), _content(engine)))
        engine.dispose()
    serial, parallel = results
    assert serial[2], "the broken records should have been quarantined"
    assert serial[:3] == parallel[:3]
    for name in serial[3]:
        assert serial[3][name] == parallel[3][name], name
