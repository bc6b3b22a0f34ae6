"""References resolve within their own Bundle; one person in several Bundles is one patient
(issue 16 item 2). Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from recruit.load import load_extract
from recruit.models import ClinicalEvent, MedicationIssue, Patient, PersonHold, Quarantine
from tests.integration.load import fhir_samples as fx

WHEN = dt.date(2025, 6, 1)
DMD = "https://dmd.nhs.uk"


def _bundle(kind: str, *entries: tuple[dict[str, Any], str | None]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for res, full_url in entries:
        entry: dict[str, Any] = {"resource": res}
        if full_url:
            entry["fullUrl"] = full_url
        out.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": out}


def _write(folder: Path, name: str, data: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(orjson.dumps(data))


def _eps_message(rid: str, patient_id: str, nhs: str, code: str, authored: str, **patient: Any):
    """An EPS prescription-order message: MessageHeader first, then the prescription and the
    people it names, each referred to by urn:uuid fullUrl."""
    pat = fx.patient(patient_id, nhs, **patient)
    pat["generalPractitioner"] = [{"identifier": {"system": fx.ODS, "value": "ZZ9001"}}]
    request = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"urn:uuid:{patient_id}"},
        "medicationCodeableConcept": {"coding": [{"system": DMD, "code": "39720311000001101"}]},
        "authoredOn": authored,
        "dispenseRequest": {"quantity": {"value": 28}},
        "requester": {"reference": "urn:uuid:role-1"},
    }
    header = {
        "resourceType": "MessageHeader",
        "id": f"mh-{rid}",
        "eventCoding": {
            "system": "https://fhir.nhs.uk/CodeSystem/message-event",
            "code": "prescription-order",
        },
        "focus": [{"reference": f"urn:uuid:{rid}"}],
    }
    return _bundle(
        "message",
        (header, f"urn:uuid:mh-{rid}"),
        (request, f"urn:uuid:{rid}"),
        (pat, f"urn:uuid:{patient_id}"),
    )


def _rows(engine, model, *cols):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(
            select(*[getattr(model, c) for c in cols]).order_by(*[getattr(model, c) for c in cols])
        ).all()


def test_a_reference_in_a_bundle_means_that_bundles_patient(engine, tmp_path):
    """Two Bundles each hold a Patient/p1, different people: each Condition stays with the patient
    of its own Bundle."""
    folder = tmp_path / "x"
    org = (fx.organization(), None)
    _write(
        folder,
        "a.json",
        _bundle(
            "collection",
            org,
            (fx.patient("p1", fx.NHS_NUMBERS[0]), None),
            (fx.condition("c1", code="82423001"), None),
        ),
    )
    _write(
        folder,
        "b.json",
        _bundle(
            "collection",
            org,
            (fx.patient("p1", fx.NHS_NUMBERS[1], birthDate="1970-01-01"), None),
            (fx.condition("c1", code="279039007"), None),
        ),
    )
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    with engine.connect() as conn:
        rows = conn.execute(
            select(Patient.nhs_number, Patient.source_id, ClinicalEvent.code)
            .join(ClinicalEvent, ClinicalEvent.patient_id == Patient.id)
            .order_by(Patient.nhs_number)
        ).all()
    assert [(r.nhs_number, r.code) for r in rows] == [
        (fx.NHS_NUMBERS[0], "82423001"),
        (fx.NHS_NUMBERS[1], "279039007"),
    ]
    # Both kept; the second person's id is made their own (ids are unique only within a Bundle).
    assert sorted(r.source_id for r in rows) == ["p1", f"p1~{fx.NHS_NUMBERS[1]}"]


def test_a_reference_to_nothing_in_its_bundle_never_reaches_another_bundle(engine, tmp_path):
    folder = tmp_path / "x"
    _write(folder, "a.json", _bundle("collection", (fx.organization(), None), (fx.patient("p1"), None)))
    _write(folder, "b.json", _bundle("collection", (fx.condition("c9", patient_ref="Patient/p1"), None)))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined_by_reason == {"reference_dangling": 1}
    with engine.connect() as conn:
        q = conn.execute(select(Quarantine.file, Quarantine.resource_id, Quarantine.field)).one()
    assert q.file.endswith("b.json") and q.resource_id == "c9" and q.field == "subject"


def test_a_reference_in_a_bundle_falls_back_to_records_outside_any_bundle(engine, tmp_path):
    """NDJSON (the server's records) plus a Bundle of observations that refer to them."""
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(fx.patient("p1")) + b"\n")
    (folder / "Organization.ndjson").write_bytes(orjson.dumps(fx.organization()) + b"\n")
    _write(folder, "obs.json", _bundle("collection", (fx.condition("c1"), None)))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0
    assert [r.code for r in _rows(engine, ClinicalEvent, "code")] == ["82423001"]


def test_searchset_pages_share_their_servers_namespace(engine, tmp_path):
    """Pages of one search: a Condition on page 2 refers to the Patient on page 1."""
    folder = tmp_path / "x"
    _write(folder, "page1.json", _bundle("searchset", (fx.organization(), None), (fx.patient("p1"), None)))
    _write(folder, "page2.json", _bundle("searchset", (fx.condition("c1"), None)))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0
    assert len(_rows(engine, ClinicalEvent, "code")) == 1


def test_one_person_in_several_eps_messages_is_one_patient(engine, tmp_path):
    """EPS sends one message per prescription, each with its own copy of the Patient (here with a
    different id each time): same NHS number and birth date, one patient with both issues."""
    folder = tmp_path / "eps"
    _write(folder, "org.json", fx.organization())
    _write(folder, "m1.json", _eps_message("rx1", "pat-a", fx.NHS_NUMBERS[0], "x", "2025-03-01"))
    _write(folder, "m2.json", _eps_message("rx2", "pat-b", fx.NHS_NUMBERS[0], "x", "2025-04-01"))
    _write(folder, "m3.json", _eps_message("rx3", "pat-c", fx.NHS_NUMBERS[1], "x", "2025-04-02"))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    assert summary.by_kind["Patient"].read == 3 and summary.by_kind["Patient"].stored == 3
    assert summary.patients == 2 and summary.same_person == 1
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Patient.nhs_number, Patient.source_id, MedicationIssue.issue_date, MedicationIssue.quantity
            )
            .join(MedicationIssue, MedicationIssue.patient_id == Patient.id)
            .order_by(MedicationIssue.issue_date)
        ).all()
        holds = conn.execute(select(PersonHold.id)).all()
    assert [(r.nhs_number, r.source_id, str(r.issue_date), r.quantity) for r in rows] == [
        (fx.NHS_NUMBERS[0], "pat-a", "2025-03-01", 28.0),
        (fx.NHS_NUMBERS[0], "pat-a", "2025-04-01", 28.0),
        (fx.NHS_NUMBERS[1], "pat-c", "2025-04-02", 28.0),
    ]
    assert holds == []  # the copies agree: nothing is unclear


def test_copies_that_disagree_hold_the_person_back_and_keep_a_death(engine, tmp_path):
    folder = tmp_path / "eps"
    _write(folder, "org.json", fx.organization())
    _write(folder, "m1.json", _eps_message("rx1", "pat-a", fx.NHS_NUMBERS[0], "x", "2025-03-01"))
    moved = {"address": [{"use": "home", "line": ["9 New Street"], "postalCode": "ZZ9 9ZZ"}]}
    _write(folder, "m2.json", _eps_message("rx2", "pat-b", fx.NHS_NUMBERS[0], "x", "2025-04-01", **moved))
    died = {"deceasedDateTime": "2025-05-01"}
    _write(folder, "m3.json", _eps_message("rx3", "pat-c", fx.NHS_NUMBERS[1], "x", "2025-01-01"))
    _write(folder, "m4.json", _eps_message("rx4", "pat-d", fx.NHS_NUMBERS[1], "x", "2025-04-02", **died))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0 and summary.patients == 2
    with engine.connect() as conn:
        deaths = dict(conn.execute(select(Patient.nhs_number, Patient.date_of_death)).all())
        holds = conn.execute(
            select(PersonHold.nhs_number, PersonHold.signal, PersonHold.reason_code).order_by(
                PersonHold.nhs_number
            )
        ).all()
    assert deaths == {fx.NHS_NUMBERS[0]: None, fx.NHS_NUMBERS[1]: dt.date(2025, 5, 1)}
    # The moved address: unclear which copy is current. The death: the person's, whichever copy.
    assert [tuple(h) for h in holds] == [(fx.NHS_NUMBERS[0], "unclear", "same_person_disagrees")]


def test_same_nhs_number_with_another_birth_date_is_not_joined(engine, tmp_path):
    folder = tmp_path / "eps"
    _write(folder, "org.json", fx.organization())
    _write(folder, "m1.json", _eps_message("rx1", "pat-a", fx.NHS_NUMBERS[0], "x", "2025-03-01"))
    _write(
        folder,
        "m2.json",
        _eps_message("rx2", "pat-b", fx.NHS_NUMBERS[0], "x", "2025-04-01", birthDate="1990-01-01"),
    )
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined_by_reason == {"duplicate_nhs_number": 1, "patient_quarantined": 1}
    assert summary.patients == 1


def test_within_one_ndjson_file_a_repeated_id_is_joined_or_a_duplicate(engine, tmp_path):
    """Bulk NDJSON is one server's records: the same Patient twice is one person; one id given to
    another NHS number cannot both be meant, and the second is quarantined."""
    folder = tmp_path / "x"
    folder.mkdir()
    lines = [fx.organization(), fx.patient("p1"), fx.patient("p1"), fx.patient("p1", fx.NHS_NUMBERS[1])]
    (folder / "all.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined_by_reason == {"duplicate_id": 1}
    assert summary.same_person == 1 and summary.patients == 1


def test_a_record_fetched_twice_in_a_search_and_a_read_is_one_person(engine, tmp_path):
    """PDS: the same Patient from a read (a file of its own) and from a search (a searchset)."""
    folder = tmp_path / "pds"
    _write(folder, "Patient.json", fx.patient("p1"))
    _write(folder, "search.json", _bundle("searchset", (fx.patient("p1"), "https://pds.example/Patient/p1")))
    _write(folder, "org.json", fx.organization())
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0 and summary.same_person == 1 and summary.patients == 1
    with engine.connect() as conn:
        assert conn.execute(select(PersonHold.id)).all() == []


def test_copies_joined_only_to_the_first_record_of_their_number(engine, tmp_path):
    """One NHS number with two birth dates across Bundles: the first record's person keeps the
    number; the others (and their copies) are quarantined, and their records say so."""
    folder = tmp_path / "eps"
    _write(folder, "org.json", fx.organization())
    _write(folder, "m1.json", _eps_message("rx1", "pat-a", fx.NHS_NUMBERS[0], "x", "2025-03-01"))
    other = {"birthDate": "1990-01-01"}
    _write(folder, "m2.json", _eps_message("rx2", "pat-b", fx.NHS_NUMBERS[0], "x", "2025-04-01", **other))
    _write(folder, "m3.json", _eps_message("rx3", "pat-c", fx.NHS_NUMBERS[0], "x", "2025-05-01", **other))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined_by_reason == {"duplicate_nhs_number": 2, "patient_quarantined": 2}
    assert summary.same_person == 0 and summary.patients == 1
    assert summary.by_kind["Patient"].stored == 1


def test_an_extract_naming_no_practice_loads_under_the_practice_given(engine, tmp_path):
    """Synthea-style Bundles: patients with no generalPractitioner and no ODS Organization. Without
    --practice they cannot be placed (the reason says what to do); with it they are that practice's,
    and a patient naming another practice by ODS code keeps it."""
    folder = tmp_path / "synthea"
    anon = fx.patient("p1")
    del anon["generalPractitioner"]
    elsewhere = fx.patient("p2", fx.NHS_NUMBERS[1])
    elsewhere["generalPractitioner"] = [{"identifier": {"system": fx.ODS, "value": "B82002"}}]
    _write(
        folder,
        "one.json",
        _bundle("transaction", (anon, "urn:uuid:1"), (fx.condition("c1", "urn:uuid:1"), None)),
    )
    first = load_extract(engine, [folder], extract_date=WHEN)
    assert first.quarantined_by_reason == {"practice_unknown": 1, "patient_quarantined": 1}
    with engine.connect() as conn:
        reason = conn.execute(
            select(Quarantine.reason).where(Quarantine.reason_code == "practice_unknown")
        ).scalar_one()
    assert "give its ODS code with --practice" in reason
    _write(folder, "two.json", _bundle("transaction", (elsewhere, "urn:uuid:2")))
    given = load_extract(engine, [folder], extract_date=WHEN, practice=" a81001 ")
    assert given.quarantined == 0 and sorted(given.practices) == ["A81001", "B82002"]
    with engine.connect() as conn:
        from recruit.models import Practice

        placed = dict(
            conn.execute(
                select(Patient.source_id, Practice.ods_code)
                .join(Practice, Practice.id == Patient.practice_id)
                .where(Patient.extract_id == given.extract_id)
            ).all()
        )
    assert placed == {"p1": "A81001", "p2": "B82002"}


def test_a_practice_code_that_is_not_one_is_refused(engine, tmp_path):
    import pytest

    from recruit.errors import RecruitError

    with pytest.raises(RecruitError, match="is not an ODS code"):
        load_extract(engine, [tmp_path], extract_date=WHEN, practice="A81 001; DROP")
