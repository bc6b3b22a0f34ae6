"""FHIR XML (R4 and STU3) is read through the same path as JSON: the same resources written in
both load into exactly the same rows. Fixtures are hand-made, modelled on UK Core and HL7
examples (NHS numbers in the 999 range, which are never issued)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load.files import read_fhir
from recruit.migrate import upgrade
from recruit.models import ClinicalEvent, MedicationIssue, Patient, Practice, Quarantine
from tests.integration.load import fhir_samples as fx

EXTRACT_DATE = dt.date(2026, 11, 1)
UKCORE = "https://fhir.hl7.org.uk/StructureDefinition"
VERIFIED = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"

ORG = {
    "resourceType": "Organization",
    "id": "org1",
    "identifier": [{"system": fx.ODS, "value": "ZZ9001"}],
    "name": "Test Surgery",
}
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"profile": [f"{UKCORE}/UKCore-Patient"]},
    "text": {"status": "generated"},
    "identifier": [
        {
            "extension": [
                {
                    "url": f"{UKCORE}/Extension-UKCore-NHSNumberVerificationStatus",
                    "valueCodeableConcept": {"coding": [{"system": VERIFIED, "code": "01"}]},
                }
            ],
            "system": fx.NHS,
            "value": fx.NHS_NUMBERS[0],
        }
    ],
    "active": True,
    "name": [{"use": "official", "family": "Tester", "given": ["Pat", "Q"], "prefix": ["Mrs"]}],
    "gender": "female",
    "birthDate": "1950-03-04",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1950-03-04T10:00:00+00:00",
            }
        ]
    },
    "address": [{"line": ["2 Low Road"], "city": "Testtown", "postalCode": "ZZ1 1ZZ"}],
    "generalPractitioner": [{"reference": "urn:uuid:9a0a0001-0000-4000-8000-000000000001"}],
    "managingOrganization": {"reference": "urn:uuid:9a0a0001-0000-4000-8000-000000000001"},
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "obs1",
    "status": "final",
    "code": {"coding": [{"system": fx.SCT, "code": "27113001", "display": "Body weight"}]},
    "subject": {"reference": "urn:uuid:9a0a0002-0000-4000-8000-000000000002"},
    "effectiveDateTime": "2024-05-06T09:30:00+01:00",
    "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
}
MEDREQ = {
    "resourceType": "MedicationRequest",
    "id": "mr1",
    "contained": [
        {
            "resourceType": "Medication",
            "id": "med1",
            "code": {
                "coding": [{"system": fx.SCT, "code": "322236009", "display": "Paracetamol 500mg tablets"}]
            },
        }
    ],
    "status": "active",
    "intent": "order",
    "medicationReference": {"reference": "#med1"},
    "subject": {"reference": "urn:uuid:9a0a0002-0000-4000-8000-000000000002"},
    "authoredOn": "2024-06-01",
    "dosageInstruction": [{"text": "One tablet four times a day"}],
    "dispenseRequest": {"quantity": {"value": 32, "unit": "tablet"}, "numberOfRepeatsAllowed": 2},
}
BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "timestamp": "2026-10-30T12:00:00+00:00",
    "entry": [
        {"fullUrl": "urn:uuid:9a0a0001-0000-4000-8000-000000000001", "resource": ORG},
        {"fullUrl": "urn:uuid:9a0a0002-0000-4000-8000-000000000002", "resource": PATIENT},
        {"fullUrl": "urn:uuid:9a0a0003-0000-4000-8000-000000000003", "resource": OBSERVATION},
        {"fullUrl": "urn:uuid:9a0a0004-0000-4000-8000-000000000004", "resource": MEDREQ},
    ],
}

ORG_XML = f"""<Organization xmlns="http://hl7.org/fhir">
  <id value="org1"/>
  <identifier><system value="{fx.ODS}"/><value value="ZZ9001"/></identifier>
  <name value="Test Surgery"/>
</Organization>"""
PATIENT_XML = f"""<Patient xmlns="http://hl7.org/fhir">
  <id value="p1"/>
  <meta><profile value="{UKCORE}/UKCore-Patient"/></meta>
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Mrs Pat Tester, <b>born</b> 1950</p></div>
  </text>
  <identifier>
    <extension url="{UKCORE}/Extension-UKCore-NHSNumberVerificationStatus">
      <valueCodeableConcept><coding><system value="{VERIFIED}"/><code value="01"/></coding>
      </valueCodeableConcept>
    </extension>
    <system value="{fx.NHS}"/>
    <value value="{fx.NHS_NUMBERS[0]}"/>
  </identifier>
  <active value="true"/>
  <name>
    <use value="official"/><family value="Tester"/><given value="Pat"/><given value="Q"/><prefix value="Mrs"/>
  </name>
  <gender value="female"/>
  <birthDate value="1950-03-04">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueDateTime value="1950-03-04T10:00:00+00:00"/>
    </extension>
  </birthDate>
  <address><line value="2 Low Road"/><city value="Testtown"/><postalCode value="ZZ1 1ZZ"/></address>
  <generalPractitioner><reference value="urn:uuid:9a0a0001-0000-4000-8000-000000000001"/>
  </generalPractitioner>
  <managingOrganization><reference value="urn:uuid:9a0a0001-0000-4000-8000-000000000001"/>
  </managingOrganization>
</Patient>"""
OBSERVATION_XML = f"""<Observation xmlns="http://hl7.org/fhir">
  <id value="obs1"/>
  <status value="final"/>
  <code><coding><system value="{fx.SCT}"/><code value="27113001"/><display value="Body weight"/>
  </coding></code>
  <subject><reference value="urn:uuid:9a0a0002-0000-4000-8000-000000000002"/></subject>
  <effectiveDateTime value="2024-05-06T09:30:00+01:00"/>
  <valueQuantity>
    <value value="72.5"/><unit value="kg"/><system value="http://unitsofmeasure.org"/><code value="kg"/>
  </valueQuantity>
</Observation>"""
MEDREQ_XML = f"""<MedicationRequest xmlns="http://hl7.org/fhir">
  <id value="mr1"/>
  <contained>
    <Medication>
      <id value="med1"/>
      <code><coding><system value="{fx.SCT}"/><code value="322236009"/>
        <display value="Paracetamol 500mg tablets"/></coding></code>
    </Medication>
  </contained>
  <status value="active"/>
  <intent value="order"/>
  <medicationReference><reference value="#med1"/></medicationReference>
  <subject><reference value="urn:uuid:9a0a0002-0000-4000-8000-000000000002"/></subject>
  <authoredOn value="2024-06-01"/>
  <dosageInstruction><text value="One tablet four times a day"/></dosageInstruction>
  <dispenseRequest>
    <numberOfRepeatsAllowed value="2"/>
    <quantity><value value="32"/><unit value="tablet"/></quantity>
  </dispenseRequest>
</MedicationRequest>"""


def bundle_xml(*entries: tuple[str, str]) -> str:
    body = "".join(
        f'<entry><fullUrl value="{url}"/><resource>{res}</resource></entry>\n' for url, res in entries
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="collection"/>
  <timestamp value="2026-10-30T12:00:00+00:00"/>
  {body}</Bundle>"""


BUNDLE_XML = bundle_xml(
    ("urn:uuid:9a0a0001-0000-4000-8000-000000000001", ORG_XML),
    ("urn:uuid:9a0a0002-0000-4000-8000-000000000002", PATIENT_XML),
    ("urn:uuid:9a0a0003-0000-4000-8000-000000000003", OBSERVATION_XML),
    ("urn:uuid:9a0a0004-0000-4000-8000-000000000004", MEDREQ_XML),
)


def records(tmp_path: Path, name: str, text: str) -> list:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return list(read_fhir(path, 0))


@pytest.mark.parametrize(
    ("xml", "json"),
    [(PATIENT_XML, PATIENT), (OBSERVATION_XML, OBSERVATION), (MEDREQ_XML, MEDREQ), (ORG_XML, ORG)],
    ids=["Patient", "Observation", "MedicationRequest", "Organization"],
)
def test_an_xml_resource_reads_as_the_same_json(tmp_path, xml, json):
    (record,) = records(tmp_path, "one.xml", xml)
    assert record.error is None
    assert record.resource == json  # the narrative's <div> dropped, lists and types as JSON has them


def test_an_xml_bundle_gives_the_same_records_as_json(tmp_path):
    xml = records(tmp_path, "b.xml", BUNDLE_XML)
    js = records(tmp_path, "b.json", orjson.dumps(BUNDLE).decode())
    assert [(r.resource, r.full_url, r.entry, r.error) for r in xml] == [
        (r.resource, r.full_url, r.entry, r.error) for r in js
    ]


def _engine(tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    upgrade(engine)
    return engine


def _rows(engine) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    out = {}
    with engine.connect() as conn:
        for model in (Patient, ClinicalEvent, MedicationIssue, Practice):
            cols = [
                c
                for c in model.__table__.columns
                if c.name not in ("id", "extract_id", "patient_id", "practice_id", "loaded_at")
            ]
            out[model.__tablename__] = sorted(
                tuple(str(v) for v in row) for row in conn.execute(select(*cols)).all()
            )
    return out


def test_the_same_bundle_in_xml_and_json_loads_into_exactly_the_same_rows(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "j").mkdir()
    (tmp_path / "x" / "bundle.xml").write_text(BUNDLE_XML, encoding="utf-8")
    (tmp_path / "j" / "bundle.json").write_bytes(orjson.dumps(BUNDLE))
    ex, ej = _engine(tmp_path, "x.db"), _engine(tmp_path, "j.db")
    sx = load_extract(ex, [tmp_path / "x"], extract_date=EXTRACT_DATE)
    sj = load_extract(ej, [tmp_path / "j"], extract_date=EXTRACT_DATE)
    rx, rj = _rows(ex), _rows(ej)
    assert rx == rj
    assert len(rx["patient"]) == 1 and len(rx["clinical_event"]) == 1 and len(rx["medication_issue"]) == 1
    assert (sx.loaded, sx.quarantined) == (sj.loaded, sj.quarantined) == (4, 0)
    with ex.connect() as conn:
        p = conn.execute(select(Patient.nhs_number, Patient.date_of_birth, Patient.postcode)).one()
        assert p == (fx.NHS_NUMBERS[0], dt.date(1950, 3, 4), "ZZ1 1ZZ")


GPC = "https://fhir.nhs.uk/STU3/StructureDefinition"
STU3_MEDREQ_XML = f"""<MedicationRequest xmlns="http://hl7.org/fhir">
  <id value="mr-issue-1"/>
  <meta><profile value="{GPC}/CareConnect-GPC-MedicationRequest-1"/></meta>
  <extension url="https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-PrescriptionType-1">
    <valueCodeableConcept><coding>
      <system value="https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-PrescriptionType-1"/>
      <code value="repeat"/>
    </coding></valueCodeableConcept>
  </extension>
  <basedOn><reference value="MedicationRequest/mr-plan-1"/></basedOn>
  <status value="completed"/>
  <intent value="order"/>
  <medicationReference><reference value="Medication/med1"/></medicationReference>
  <subject><reference value="Patient/p1"/></subject>
  <authoredOn value="2024-01-10"/>
  <dispenseRequest>
    <validityPeriod><start value="2024-02-01"/></validityPeriod>
    <numberOfRepeatsAllowed value="0"/>
    <quantity><value value="28"/><unit value="tablet"/></quantity>
  </dispenseRequest>
</MedicationRequest>"""


def test_an_stu3_xml_resource_is_read_with_the_stu3_models(tmp_path):
    (record,) = records(tmp_path, "gpc.xml", STU3_MEDREQ_XML)
    res = record.resource
    assert record.error is None
    assert res["extension"][0]["url"].endswith("PrescriptionType-1")  # one extension: still a list
    assert res["basedOn"] == [{"reference": "MedicationRequest/mr-plan-1"}]
    assert res["dispenseRequest"]["validityPeriod"] == {"start": "2024-02-01"}
    assert res["dispenseRequest"]["numberOfRepeatsAllowed"] == 0  # an integer, as in JSON
    assert res["dispenseRequest"]["quantity"] == {"value": 28, "unit": "tablet"}
    assert res["meta"] == {"profile": [f"{GPC}/CareConnect-GPC-MedicationRequest-1"]}


def test_stu3_only_elements_are_read_with_stu3_cardinality(tmp_path):
    # STU3 Condition.assertedDate (gone in R4) is one value; STU3 Patient.animal exists only there
    xml = f"""<Condition xmlns="http://hl7.org/fhir"><id value="c1"/>
      <meta><profile value="{GPC}/CareConnect-GPC-ProblemHeader-Condition-1"/></meta>
      <clinicalStatus value="active"/><assertedDate value="2020-01-02"/>
      <subject><reference value="Patient/p1"/></subject></Condition>"""
    (record,) = records(tmp_path, "c.xml", xml)
    assert record.resource["clinicalStatus"] == "active"  # an STU3 code, not an R4 CodeableConcept
    assert record.resource["assertedDate"] == "2020-01-02"


def _load_folder(tmp_path: Path, files: dict[str, str]):  # type: ignore[no-untyped-def]
    folder = tmp_path / "extract"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    engine = _engine(tmp_path, "q.db")
    summary = load_extract(engine, [folder], extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Quarantine.file,
                Quarantine.resource_id,
                Quarantine.resource_type,
                Quarantine.field,
                Quarantine.reason_code,
                Quarantine.reason,
            )
        ).all()
    return summary, rows


def test_a_malformed_element_quarantines_its_record_naming_entry_and_field(tmp_path):
    bad = OBSERVATION_XML.replace('<value value="72.5"/>', '<value value="seventy"/>')
    xml = bundle_xml(
        ("urn:uuid:9a0a0001-0000-4000-8000-000000000001", ORG_XML),
        ("urn:uuid:9a0a0002-0000-4000-8000-000000000002", PATIENT_XML),
        ("urn:uuid:9a0a0003-0000-4000-8000-000000000003", bad),
        ("urn:uuid:9a0a0004-0000-4000-8000-000000000004", MEDREQ_XML),
    )
    summary, rows = _load_folder(tmp_path, {"b.xml": xml})
    assert (summary.loaded, summary.quarantined) == (3, 1)
    ((file, rid, rtype, field, code, reason),) = rows
    assert file.endswith("b.xml")
    assert (rid, rtype, field, code) == (
        "obs1",
        "Observation",
        "Observation.valueQuantity.value",
        "malformed",
    )
    assert "should be a number" in reason and "line " in reason and "seventy" not in reason


def test_a_repeated_single_element_is_quarantined(tmp_path):
    bad = PATIENT_XML.replace('<gender value="female"/>', '<gender value="female"/><gender value="male"/>')
    summary, rows = _load_folder(tmp_path, {"p.xml": bad, "o.xml": ORG_XML})
    ((file, rid, rtype, field, code, reason),) = rows
    assert (file.rsplit("/", 1)[-1], rid, rtype, field, code) == (
        "p.xml",
        "p1",
        "Patient",
        "Patient.gender",
        "malformed",
    )
    assert "appears 2 times" in reason


def test_a_file_that_is_not_well_formed_xml_is_quarantined_not_fatal(tmp_path):
    cut = PATIENT_XML[: PATIENT_XML.index("<gender")]
    summary, rows = _load_folder(tmp_path, {"cut.xml": cut, "o.xml": ORG_XML})
    assert summary.quarantined == 1  # (the other file is still read)
    ((file, rid, rtype, field, code, reason),) = rows
    assert (
        file.endswith("cut.xml") and code == "unreadable" and reason.startswith("not well-formed XML (line ")
    )


def test_external_entities_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT")
    xxe = f"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file://{secret}">]>
<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><name><family value="&xxe;"/></name></Patient>"""
    (record,) = records(tmp_path, "xxe.xml", xxe)
    assert record.resource is None and "DTD" in (record.error or "")
    bomb = """<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&lol2;"/></Patient>"""
    (record,) = records(tmp_path, "bomb.xml", bomb)
    assert record.resource is None and "DTD" in (record.error or "")
    summary, rows = _load_folder(tmp_path, {"xxe.xml": xxe, "o.xml": ORG_XML})
    assert summary.quarantined == 1 and "SECRET" not in str(rows)


def test_xml_in_a_mixed_folder_is_read_and_no_files_names_xml(tmp_path):
    summary, _ = _load_folder(
        tmp_path,
        {
            "org.json": orjson.dumps(ORG).decode(),
            "patient.xml": PATIENT_XML.replace(
                "urn:uuid:9a0a0001-0000-4000-8000-000000000001", "Organization/org1"
            ),
        },
    )
    assert (summary.loaded, summary.quarantined) == (2, 0)
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(RecruitError, match=r"\.xml"):
        load_extract(_engine(tmp_path, "e.db"), [empty], extract_date=EXTRACT_DATE)


# --- --strict: JSON and XML alike, STU3 resources against the STU3 models ------------------------


def test_strict_checks_xml_and_checks_stu3_resources_against_stu3(tmp_path):
    from recruit.load.strict import strict_failures

    stu3_condition = {
        "resourceType": "Condition",
        "id": "c1",
        "meta": {"profile": [f"{GPC}/CareConnect-GPC-ProblemHeader-Condition-1"]},
        "clinicalStatus": "active",  # an STU3 code; R4 wants a CodeableConcept here
        "subject": {"reference": "Patient/p1"},
    }
    r4_condition = {k: v for k, v in stu3_condition.items() if k != "meta"}
    files = {
        "stu3.json": orjson.dumps(stu3_condition).decode(),
        "r4.json": orjson.dumps(r4_condition).decode(),
        # (STU3's numberOfRepeatsAllowed is a positiveInt: 0 is R4's unsignedInt)
        "gpc.xml": STU3_MEDREQ_XML.replace(
            'numberOfRepeatsAllowed value="0"', 'numberOfRepeatsAllowed value="1"'
        ),
        "r4.xml": STU3_MEDREQ_XML.replace('<status value="completed"/>', "").replace(
            f'<meta><profile value="{GPC}/CareConnect-GPC-MedicationRequest-1"/></meta>', ""
        ),
    }
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(tmp_path / name)
    failures = strict_failures(paths, workers=1)
    by_file = {paths[key[0]].name: problem for key, problem in failures.items()}
    assert set(by_file) == {"r4.json", "r4.xml"}  # the STU3 ones are valid STU3
    assert by_file["r4.json"][0] == "R4" and by_file["r4.json"][1].startswith("clinicalStatus")
    assert by_file["r4.xml"][0] == "R4"
    repeats = tmp_path / "zero.xml"
    repeats.write_text(STU3_MEDREQ_XML, encoding="utf-8")
    ((_, problem),) = strict_failures([repeats], workers=1).items()
    assert problem[:2] == ("STU3", "dispenseRequest.numberOfRepeatsAllowed")
