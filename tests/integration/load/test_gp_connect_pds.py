"""GP Connect STU3 and PDS details, and Bundle edge cases (issue 16 item 5).

Fixtures are hand-made with synthetic values, in the published shapes: a GP Connect structured
record Bundle (STU3, type collection, CareConnect-GPC-* profiles; a repeat's authorisation is a
MedicationRequest with intent plan and each issue one with intent order, basedOn the plan, whose
authoredOn is the authorisation's and whose own date is dispenseRequest.validityPeriod.start; the
quantity is dispenseRequest.quantity with GP Connect's quantity-text extension), a PDS FHIR API
Patient (R4: Extension-UKCore-NHSCommunication, generalPractitioner identifier with its period),
and transaction / batch Bundles whose entries may carry only a request.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load.fhir import FhirReader
from recruit.load.files import DELETED_PATIENT, EMPTY_BUNDLE, read_fhir
from recruit.load.values import DateReader, Invalid
from recruit.models import ClinicalEvent, Extract, MedicationIssue, Patient, PersonHold, Quarantine
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx
from tests.integration.load.db_helpers import count

EXTRACT_DATE = dt.date(2026, 11, 1)
GPC = "https://fhir.nhs.uk/STU3/StructureDefinition"
QUANTITY_TEXT = f"{GPC}/Extension-CareConnect-GPC-MedicationQuantityText-1"
PRESCRIPTION_TYPE = f"{GPC}/Extension-CareConnect-GPC-PrescriptionType-1"
UKCORE_COMM = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSCommunication"
CARECONNECT_COMM = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-NHSCommunication-1"
DMD_TERM = "Atorvastatin 20mg tablets"


def _profile(name: str) -> dict[str, Any]:
    return {"profile": [f"{GPC}/{name}"]}


def _language(code: str, display: str, system: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


# --- a GP Connect structured record ---------------------------------------------------------


def gpc_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "gpc-pat-1",
        "meta": _profile("CareConnect-GPC-Patient-1"),
        "extension": [
            {
                "url": f"{GPC}/Extension-CareConnect-GPC-RegistrationDetails-1",
                "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": "2009-06-01"}}],
            },
            {
                "url": CARECONNECT_COMM,
                "extension": [
                    {
                        "url": "language",
                        "valueCodeableConcept": _language(
                            "pl",
                            "Polish",
                            "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-HumanLanguage-1",
                        ),
                    },
                    {"url": "interpreterRequired", "valueBoolean": False},
                ],
            },
        ],
        "identifier": [{"system": fx.NHS, "value": fx.NHS_NUMBERS[1]}],
        "active": True,
        "name": [{"use": "official", "family": "Tester", "given": ["Gwen"]}],
        "gender": "female",
        "birthDate": "1961-02-03",
        "address": [{"use": "home", "line": ["3 Mill Lane", "Testtown"], "postalCode": "ZZ1 3ZZ"}],
        "generalPractitioner": [{"reference": "Practitioner/gpc-gp-1"}],
        "managingOrganization": {"reference": "Organization/gpc-org-1"},
    }


def gpc_issue(rid: str, valid_from: str, quantity: dict[str, Any]) -> dict[str, Any]:
    """One issue of the repeat: authoredOn is the authorisation's date, copied."""
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "meta": _profile("CareConnect-GPC-MedicationRequest-1"),
        "extension": [{"url": PRESCRIPTION_TYPE, "valueCodeableConcept": {"coding": [{"code": "repeat"}]}}],
        "basedOn": [{"reference": "MedicationRequest/gpc-auth-1"}],
        "status": "completed",
        "intent": "order",
        "medicationReference": {"reference": "Medication/gpc-med-1"},
        "subject": {"reference": "Patient/gpc-pat-1"},
        "authoredOn": "2024-01-10",
        "dispenseRequest": {
            "validityPeriod": {"start": valid_from},
            "quantity": quantity,
            "expectedSupplyDuration": {"value": 28, "unit": "day", "system": "http://unitsofmeasure.org"},
        },
    }


def _quantity(value: float | None, text: str) -> dict[str, Any]:
    q: dict[str, Any] = {"extension": [{"url": QUANTITY_TEXT, "valueString": text}]}
    if value is not None:
        q["value"] = value
    return q


def gpc_bundle() -> dict[str, Any]:
    authorisation = gpc_issue("gpc-auth-1", "2024-01-10", _quantity(56, "tablet"))
    authorisation.update(intent="plan", status="active")
    del authorisation["basedOn"]
    blood_pressure = {
        "resourceType": "Observation",
        "id": "gpc-bp-1",
        "meta": _profile("CareConnect-GPC-Observation-1"),
        "status": "final",
        "code": {"coding": [{"system": fx.SCT, "code": "75367002", "display": "Blood pressure"}]},
        "subject": {"reference": "Patient/gpc-pat-1"},
        "effectiveDateTime": "2024-02-14",
        "component": [
            {
                "code": {"coding": [{"system": fx.SCT, "code": "72313002", "display": "Systolic"}]},
                "valueQuantity": {"value": 128, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org"},
            },
            {
                "code": {"coding": [{"system": fx.SCT, "code": "1091811000000102", "display": "Diastolic"}]},
                "valueQuantity": {"value": 82, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org"},
            },
        ],
    }
    resources = [
        gpc_patient(),
        {
            "resourceType": "Organization",
            "id": "gpc-org-1",
            "meta": _profile("CareConnect-GPC-Organization-1"),
            "identifier": [{"system": fx.ODS, "value": "ZZ9101"}],
            "name": "Test Gpc Surgery",
        },
        {
            "resourceType": "Practitioner",
            "id": "gpc-gp-1",
            "meta": _profile("CareConnect-GPC-Practitioner-1"),
            "name": [{"family": "Example", "given": ["Sam"], "prefix": ["Dr"]}],
        },
        {
            "resourceType": "Medication",
            "id": "gpc-med-1",
            "meta": _profile("CareConnect-GPC-Medication-1"),
            "code": {"coding": [{"system": fx.SCT, "code": "320000009", "display": DMD_TERM}]},
        },
        authorisation,
        gpc_issue("gpc-issue-1", "2024-01-10", _quantity(56, "tablet")),
        gpc_issue("gpc-issue-2", "2024-03-06", _quantity(28.5, "tablet")),
        gpc_issue("gpc-issue-3", "2024-05-02", _quantity(None, "one pack")),  # text only: no number
        blood_pressure,
        {
            "resourceType": "List",
            "id": "gpc-list-1",
            "meta": _profile("CareConnect-GPC-List-1"),
            "status": "current",
            "mode": "snapshot",
        },
    ]
    return {
        "resourceType": "Bundle",
        "meta": _profile("GPConnect-StructuredRecord-Bundle-1"),
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def _load(engine, folder: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    return load_extract(engine, [folder], extract_date=EXTRACT_DATE, **kwargs)


def test_gp_connect_issue_dates_quantities_and_components_are_stored(engine, tmp_path):
    folder = tmp_path / "gpc"
    folder.mkdir()
    (folder / "structured.json").write_bytes(orjson.dumps(gpc_bundle()))
    summary = _load(engine, folder)
    assert summary.quarantined == 0
    assert summary.not_used["MedicationRequest authorisation (intent plan), not an issue"] == 1
    assert sum(1 for what in summary.not_used if what.startswith("List")) == 1
    # Read as STU3: everything but the List (not used) and the plan (not used).
    assert summary.stu3_records == summary.read == 8
    with engine.connect() as conn:
        issues = conn.execute(
            select(
                MedicationIssue.source_resource_id,
                MedicationIssue.issue_date,
                MedicationIssue.quantity,
                MedicationIssue.code_system,
                MedicationIssue.code,
                MedicationIssue.course,
            ).order_by(MedicationIssue.source_resource_id)
        ).all()
        events = conn.execute(
            select(
                ClinicalEvent.code, ClinicalEvent.event_date, ClinicalEvent.value, ClinicalEvent.unit
            ).order_by(ClinicalEvent.code)
        ).all()
        patient = conn.execute(
            select(
                Patient.nhs_number,
                Patient.registration_start,
                Patient.language,
                Patient.needs_interpreter,
            )
        ).one()
    assert issues == [
        ("gpc-issue-1", dt.date(2024, 1, 10), 56.0, "dmd", "320000009", "repeat"),
        ("gpc-issue-2", dt.date(2024, 3, 6), 28.5, "dmd", "320000009", "repeat"),
        ("gpc-issue-3", dt.date(2024, 5, 2), None, "dmd", "320000009", "repeat"),
    ]
    assert events == [
        ("1091811000000102", dt.date(2024, 2, 14), 82.0, "mm[Hg]"),
        ("72313002", dt.date(2024, 2, 14), 128.0, "mm[Hg]"),
        ("75367002", dt.date(2024, 2, 14), None, None),
    ]
    assert patient == (fx.NHS_NUMBERS[1], dt.date(2009, 6, 1), "Polish", False)


def reader() -> FhirReader:
    return FhirReader(DateReader(EXTRACT_DATE))


def test_issue_date_is_validity_start_in_r4_too_else_authored_on():
    r4 = fx.med_request(
        dispenseRequest={"validityPeriod": {"start": "2024-04-02"}, "quantity": {"value": 30}}
    )
    (row,) = reader().read(r4).medications
    assert (row.issue_date, row.quantity) == ("2024-04-02", 30.0)
    (plain,) = reader().read(fx.med_request()).medications
    assert plain.issue_date == "2024-03-01"  # no validityPeriod: authoredOn
    with pytest.raises(Invalid) as err:
        reader().read(fx.med_request(dispenseRequest={"validityPeriod": {"start": "2099-01-01"}}))
    assert (err.value.code, err.value.field) == ("date_in_future", "dispenseRequest.validityPeriod.start")


def test_each_component_carries_its_own_value_never_the_top_level_one():
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01",
        "code": {"coding": [{"system": fx.SCT, "code": "75367002"}]},
        "valueQuantity": {"value": 1, "unit": "top"},
        "component": [
            {"code": {"coding": [{"system": fx.SCT, "code": "72313002"}]}},  # no value of its own
            {
                "code": {"coding": [{"system": fx.SCT, "code": "1091811000000102"}]},
                "valueQuantity": {"value": 70.5, "unit": "mm[Hg]"},
            },
        ],
    }
    rows = {e.code: (e.value, e.unit) for e in reader().read(obs).events}
    assert rows == {"75367002": (1.0, "top"), "72313002": (None, None), "1091811000000102": (70.5, "mm[Hg]")}
    obs["component"][1]["valueQuantity"]["value"] = "70"
    with pytest.raises(Invalid) as err:
        reader().read(obs)
    assert (err.value.code, err.value.field) == ("wrong_type", "component[1].valueQuantity.value")


# --- PDS ------------------------------------------------------------------------------------


def pds_patient(nhs: str = fx.NHS_NUMBERS[2], **extra: Any) -> dict[str, Any]:
    res = {
        "resourceType": "Patient",
        "id": nhs,
        "identifier": [{"system": fx.NHS, "value": nhs}],
        "meta": {"versionId": "3"},
        "name": [
            {"id": "n1", "use": "usual", "period": {"start": "2001-01-01"}, "given": ["Jo"], "family": "Pds"}
        ],
        "gender": "male",
        "birthDate": "1975-07-08",
        "address": [
            {"id": "a1", "use": "home", "line": ["5 Hill Road", "Testtown"], "postalCode": "ZZ1 5ZZ"}
        ],
        "generalPractitioner": [
            {
                "id": "gp1",
                "type": "Organization",
                "identifier": {"system": fx.ODS, "value": "ZZ9001", "period": {"start": "2018-09-29"}},
            }
        ],
        "extension": [
            {
                "url": UKCORE_COMM,
                "extension": [
                    {
                        "url": "language",
                        "valueCodeableConcept": _language(
                            "fr", "French", "https://fhir.hl7.org.uk/CodeSystem/UKCore-HumanLanguage"
                        ),
                    },
                    {"url": "interpreterRequired", "valueBoolean": True},
                ],
            }
        ],
    }
    res.update(extra)
    return res


def test_pds_patient_language_interpreter_and_registration_are_stored(engine, tmp_path):
    folder = tmp_path / "pds"
    fx.write_ndjson(folder / "Organization.ndjson", [fx.organization()])
    fx.write_ndjson(folder / "Patient.ndjson", [pds_patient()])
    summary = _load(engine, folder)
    assert (summary.read, summary.loaded, summary.quarantined) == (2, 2, 0)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                Patient.nhs_number,
                Patient.source_id,
                Patient.language,
                Patient.needs_interpreter,
                Patient.registration_start,
                Patient.registration_end,
                Patient.postcode,
            )
        ).one()
    assert row == (
        fx.NHS_NUMBERS[2],
        fx.NHS_NUMBERS[2],
        "French",
        True,
        dt.date(2018, 9, 29),
        None,
        "ZZ1 5ZZ",
    )


def _comm(url: str, code: str, display: str, *subs: dict[str, Any]) -> dict[str, Any]:
    language = {"url": "language", "valueCodeableConcept": _language(code, display, "urn:test")}
    return {"url": url, "extension": [language, *subs]}


def test_nhs_communication_extension_language_choices():
    def read(*extensions: dict[str, Any]):  # type: ignore[no-untyped-def]
        p = reader().read(pds_patient(extension=list(extensions))).patients[0]
        return p.language, p.needs_interpreter

    assert read(_comm(UKCORE_COMM, "en", "English")) == (None, False)
    assert read(_comm(CARECONNECT_COMM, "q4", "British Sign Language")) == ("British Sign Language", False)
    preferred = {"url": "preferred", "valueBoolean": True}
    needs = {"url": "interpreterRequired", "valueBoolean": True}
    assert read(_comm(UKCORE_COMM, "de", "German"), _comm(UKCORE_COMM, "pl", "Polish", preferred, needs)) == (
        "Polish",
        True,
    )
    # Patient.communication still read; the extension does not override a language already named.
    comm = [{"language": _language("cy", "Welsh", "urn:ietf:bcp:47")}]
    p = reader().read(pds_patient(communication=comm)).patients[0]
    assert (p.language, p.needs_interpreter) == ("Welsh", True)


# --- transaction and batch Bundles --------------------------------------------------------


def transaction_bundle() -> dict[str, Any]:
    """POSTs with resources, then entries with only a request, and one with neither."""
    pat = fx.patient("t-pat-1", fx.NHS_NUMBERS[3])
    cond = fx.condition("t-cond-1", patient_ref="urn:uuid:5e0c0002-0000-4000-8000-000000000002")
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:5e0c0001-0000-4000-8000-000000000001", "resource": fx.organization(),
             "request": {"method": "POST", "url": "Organization"}},
            {"fullUrl": "urn:uuid:5e0c0002-0000-4000-8000-000000000002", "resource": pat,
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:5e0c0003-0000-4000-8000-000000000003", "resource": cond,
             "request": {"method": "POST", "url": "Condition"}},
            {"request": {"method": "DELETE", "url": "Patient/t-pat-old"}},
            {"request": {"method": "DELETE", "url": f"Patient?identifier={fx.NHS}|{fx.NHS_NUMBERS[4]}"}},
            {"request": {"method": "DELETE", "url": "Condition/t-cond-old"}},
            {"request": {"method": "GET", "url": "Observation?patient=Patient/t-pat-1"}},
            {"fullUrl": "urn:uuid:5e0c0009-0000-4000-8000-000000000009"},  # neither: quarantined
        ],
    }  # fmt: skip


TRANSACTION_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="batch"/>
  <entry><request><method value="DELETE"/><url value="Patient/t-pat-old"/></request></entry>
  <entry><request><method value="GET"/><url value="Observation?patient=Patient/t-pat-1"/></request></entry>
  <entry><fullUrl value="urn:uuid:5e0c0009-0000-4000-8000-000000000009"/></entry>
  <entry><resource/><request><method value="DELETE"/><url value="Condition/t-cond-old"/></request></entry>
  <entry><request><method value="PURGE"/><url value="Patient/t-pat-old"/></request></entry>
</Bundle>"""
TRANSACTION_JSON = {
    "resourceType": "Bundle",
    "type": "batch",
    "entry": [
        {"request": {"method": "DELETE", "url": "Patient/t-pat-old"}},
        {"request": {"method": "GET", "url": "Observation?patient=Patient/t-pat-1"}},
        {"fullUrl": "urn:uuid:5e0c0009-0000-4000-8000-000000000009"},
        {"resource": None, "request": {"method": "DELETE", "url": "Condition/t-cond-old"}},
        {"request": {"method": "PURGE", "url": "Patient/t-pat-old"}},
    ],
}


def test_entries_with_only_a_request_read_the_same_from_json_and_xml(tmp_path):
    (tmp_path / "t.xml").write_text(TRANSACTION_XML, encoding="utf-8")
    (tmp_path / "t.json").write_bytes(orjson.dumps(TRANSACTION_JSON))
    xml = [(r.entry, r.error, r.field, r.not_used) for r in read_fhir(tmp_path / "t.xml", 0)]
    js = [(r.entry, r.error, r.field, r.not_used) for r in read_fhir(tmp_path / "t.json", 0)]
    assert xml == js
    assert js == [
        (0, None, None, DELETED_PATIENT),
        (1, None, None, "Bundle entry with only a request (GET Observation), no record"),
        (2, "the Bundle entry has no resource (no request either)", "resource", None),
        (3, None, None, "Bundle entry with only a request (DELETE Condition), no record"),
        (4, "the Bundle entry has no resource (its request has no method FHIR names)", "resource", None),
    ]


def test_transaction_request_only_entries_are_not_used_and_delete_nothing(engine, tmp_path):
    folder = tmp_path / "tx"
    folder.mkdir()
    (folder / "transaction.json").write_bytes(orjson.dumps(transaction_bundle()))
    summary = _load(engine, folder)
    assert (summary.read, summary.loaded, summary.quarantined) == (4, 3, 1)
    assert summary.not_used[DELETED_PATIENT] == 2
    assert summary.not_used["Bundle entry with only a request (DELETE Condition), no record"] == 1
    assert summary.not_used["Bundle entry with only a request (GET Observation), no record"] == 1
    assert not any(fx.NHS_NUMBERS[4] in what or "t-pat-old" in what for what in summary.not_used)
    with engine.connect() as conn:
        q = conn.execute(
            select(
                Quarantine.file,
                Quarantine.resource_id,
                Quarantine.field,
                Quarantine.reason_code,
                Quarantine.reason,
            )
        ).one()
        stored = conn.execute(select(Patient.source_id, Patient.nhs_number)).all()
        conds = conn.execute(select(ClinicalEvent.source_resource_id)).all()
    assert q.file.endswith("transaction.json") and q.resource_id == "entry[7]"
    assert (q.field, q.reason_code) == ("resource", "malformed")
    assert q.reason == "the Bundle entry has no resource (no request either)"
    assert stored == [("t-pat-1", fx.NHS_NUMBERS[3])] and conds == [("t-cond-1",)]


def test_a_delete_never_removes_a_patient_loaded_before(engine, tmp_path):
    first = tmp_path / "first"
    fx.base_extract(first)
    _load(engine, first)
    second = tmp_path / "second"
    second.mkdir()
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": fx.organization(), "request": {"method": "PUT", "url": "Organization/org1"}},
            {"request": {"method": "DELETE", "url": "Patient/p1"}},
        ],
    }
    (second / "tx.json").write_bytes(orjson.dumps(tx))
    summary = _load(engine, second)
    assert summary.not_used[DELETED_PATIENT] == 1
    assert count(engine, Patient) == 1
    # Nothing deleted, but the person the request names is held back from letters.
    with engine.connect() as conn:
        holds = conn.execute(
            select(PersonHold.source_id, PersonHold.nhs_number, PersonHold.signal, PersonHold.reason_code)
        ).all()
    assert [tuple(h) for h in holds] == [("p1", None, "left", "deleted_in_extract")]


def test_a_delete_by_nhs_number_holds_that_number(engine, tmp_path):
    folder = tmp_path / "tx"
    folder.mkdir()
    (folder / "transaction.json").write_bytes(orjson.dumps(transaction_bundle()))
    _load(engine, folder)
    with engine.connect() as conn:
        held = conn.execute(select(PersonHold.source_id, PersonHold.nhs_number).order_by(PersonHold.id)).all()
    assert [tuple(h) for h in held] == [("t-pat-old", None), (None, fx.NHS_NUMBERS[4])]


# --- empty Bundles -------------------------------------------------------------------------

EMPTY_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir"><type value="searchset"/><total value="0"/></Bundle>"""


def _empty_bundles(folder: Path, timestamp: bool = True) -> None:
    folder.mkdir(parents=True)
    stamp = {"timestamp": "2026-10-30T09:00:00+00:00"} if timestamp else {}
    (folder / "a_empty.json").write_bytes(
        orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": [], **stamp})
    )
    (folder / "b_noentry.json").write_bytes(
        orjson.dumps({"resourceType": "Bundle", "type": "collection", **stamp})
    )
    (folder / "c_empty.xml").write_text(EMPTY_XML, encoding="utf-8")


def test_only_empty_bundles_say_so_and_load_nothing(engine, tmp_path):
    folder = tmp_path / "empty"
    _empty_bundles(folder)
    with pytest.raises(RecruitError) as err:
        _load(engine, folder)
    message = str(err.value)
    assert "3 file(s) hold a Bundle with no entries" in message
    assert "a_empty.json" in message and "the files are empty" not in message
    assert count(engine, Extract) == 0 and count(engine, Quarantine) == 0


def test_only_empty_bundles_without_a_date_say_so_rather_than_ask_for_one(engine, tmp_path):
    folder = tmp_path / "empty"
    _empty_bundles(folder, timestamp=False)
    with pytest.raises(RecruitError) as err:
        load_extract(engine, [folder])
    assert "3 file(s) hold a Bundle with no entries" in str(err.value)


def test_empty_bundles_beside_records_load_normally_and_are_counted(engine, tmp_path):
    folder = tmp_path / "mixed"
    _empty_bundles(folder)
    fx.base_extract(folder)
    summary = _load(engine, folder)
    assert (summary.read, summary.loaded, summary.quarantined) == (3, 3, 0)
    assert summary.empty_bundles == 3
    assert [Path(f).name for f in summary.empty_bundle_files] == [
        "a_empty.json",
        "b_noentry.json",
        "c_empty.xml",
    ]
    assert EMPTY_BUNDLE not in summary.not_used  # not a record: counted apart
    assert count(engine, Patient) == 1


def test_load_prints_stu3_count_empty_bundles_and_deleted_patients(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "structured.json").write_bytes(orjson.dumps(gpc_bundle()))
    (folder / "empty.json").write_bytes(
        orjson.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []})
    )
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/x"}}],
    }
    (folder / "tx.json").write_bytes(orjson.dumps(tx))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GP Connect (FHIR STU3) records: 8" in out
    assert "Bundles with no entries: 1 (in " in out and "empty.json" in out
    assert "1 Bundle entry(ies) asked to delete a patient record" in out


def test_an_xml_entry_with_two_resources_is_quarantined_naming_the_element(tmp_path):
    two = """<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>
  <entry><resource><Basic><id value="b1"/></Basic><Basic><id value="b2"/></Basic></resource></entry>
</Bundle>"""
    (tmp_path / "two.xml").write_text(two, encoding="utf-8")
    (record,) = read_fhir(tmp_path / "two.xml", 0)
    assert (record.entry, record.field, record.not_used) == (0, "Bundle.entry.resource", None)
    assert record.error == "the XML element Bundle.entry.resource (line 2) should hold one resource"
