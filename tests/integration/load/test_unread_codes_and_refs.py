"""Unfamiliar codings and references to things not in the extract drop nothing (issue 16 item 3).

A prescription whose medicine is coded only in systems recruit does not read (RxNorm, as
Synthea writes; a Read v2 drug code; a supplier's local code) is counted as not used, as is a
Medication with no dm+d code and a prescription pointing at one; a prescription pointing at a
Medication absent from the extract stays quarantined. References other than the subject (and
medicationReference) -- Encounter, Practitioner, Location, basedOn, partOf... -- never
quarantine a record, in Synthea's shape (transaction Bundle, urn:uuid fullUrls, conditional
references) or UK Core's (Practitioner and Organization named by identifier). A patient whose
generalPractitioner names something not in the extract is kept when the practice can be told.

Fixtures are hand-made, modelled on the published shapes, with synthetic values only.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from sqlalchemy import select

from recruit.load import load_extract
from recruit.load.fhir import NOT_DMD, FhirReader, NotUsed
from recruit.load.values import DateReader, Invalid
from recruit.models import ClinicalEvent, MedicationIssue, Patient, Practice, Quarantine
from tests.integration.load import fhir_samples as fx

EXTRACT_DATE = dt.date(2026, 11, 1)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
READV2 = "http://read.info/readv2"
LOCAL_DRUGS = "https://gp-system.example/local-drug-codes"  # stands for a supplier's own codes
DMD_URI = "https://dmd.nhs.uk"
GMC = "https://fhir.hl7.org.uk/Id/gmc-number"
SDS_USER = "https://fhir.nhs.uk/Id/sds-user-id"
NPI = "http://hl7.org/fhir/sid/us-npi"
SYNTHEA_ID = "https://github.com/synthetichealth/synthea"
PLACED = select(Patient.source_id, Practice.ods_code).join(Practice, Practice.id == Patient.practice_id)


def concept(*codings: tuple[str, str]) -> dict:
    return {"coding": [{"system": s, "code": c} for s, c in codings]}


def rx_request(rid: str, **extra) -> dict:
    """A MedicationRequest with its medicine given by `extra` (code or reference)."""
    res = fx.med_request(rid)
    del res["medicationCodeableConcept"]
    res.update(extra)
    return res


def reader() -> FhirReader:
    return FhirReader(DateReader(EXTRACT_DATE))


# --- item 3: medicines coded only in systems recruit does not read ---------------------------------


def test_reader_counts_a_prescription_coded_only_in_other_systems_as_not_used():
    for system, code in ((RXNORM, "313782"), (READV2, "di4.."), (LOCAL_DRUGS, "EMISDRUG123")):
        with pytest.raises(NotUsed) as err:
            reader().read(rx_request("m", medicationCodeableConcept=concept((system, code))))
        assert err.value.what == f"MedicationRequest for a medicine {NOT_DMD}"
        statement = rx_request("s", medicationCodeableConcept=concept((system, code)))
        statement |= {"resourceType": "MedicationStatement", "status": "active"}
        statement["effectiveDateTime"] = "2024-01-02"
        with pytest.raises(NotUsed) as err:
            reader().read(statement)
        assert err.value.what == f"MedicationStatement for a medicine {NOT_DMD}"


def test_reader_keeps_the_dmd_coding_beside_unfamiliar_ones():
    both = rx_request("m", medicationCodeableConcept=concept((RXNORM, "313782"), (DMD_URI, "322341003")))
    (m,) = reader().read(both).medications
    assert (m.code_system, m.code) == ("dmd", "322341003")
    # A SNOMED-coded medicine (as EPS and GP Connect send dm+d) after a local code: stored as dm+d.
    snomed = rx_request(
        "m", medicationCodeableConcept=concept((LOCAL_DRUGS, "X1"), (fx.SCT, "39720311000001101"))
    )
    (m,) = reader().read(snomed).medications
    assert (m.code_system, m.code) == ("dmd", "39720311000001101")


def test_reader_medication_without_dmd_is_not_used_but_its_keys_are_kept():
    med = {"resourceType": "Medication", "id": "rx1", "code": concept((RXNORM, "313782"))}
    with pytest.raises(NotUsed) as err:
        reader().read(med, "urn:uuid:2f5c0f7e-0000-4000-8000-000000000001")
    assert err.value.what == f"Medication {NOT_DMD}"
    assert err.value.parsed is not None
    keys = [(m.key, m.code) for m in err.value.parsed.medicines]
    assert keys == [("Medication/rx1", None), ("urn:uuid:2f5c0f7e-0000-4000-8000-000000000001", None)]


def test_reader_contained_medication_without_dmd_is_not_used_and_a_missing_one_is_quarantined():
    contained = [{"resourceType": "Medication", "id": "med", "code": concept((RXNORM, "313782"))}]
    with pytest.raises(NotUsed):
        reader().read(rx_request("m", contained=contained, medicationReference={"reference": "#med"}))
    missing = rx_request("m", medicationReference={"reference": "#other"})
    with pytest.raises(Invalid) as err:
        reader().read(missing)
    assert (err.value.code, err.value.field) == ("reference_dangling", "medicationReference")


def _medicine_extract(folder):
    files = fx.base_extract(folder)
    meds = [
        {"resourceType": "Medication", "id": "rx-only", "code": concept((RXNORM, "313782"))},
        {"resourceType": "Medication", "id": "local-only", "code": concept((LOCAL_DRUGS, "EMISDRUG9"))},
        {
            "resourceType": "Medication",
            "id": "mixed",
            "code": concept((LOCAL_DRUGS, "EMISDRUG7"), (fx.SCT, "322341003")),
        },
    ]
    requests = [
        rx_request("r-rxnorm", medicationCodeableConcept=concept((RXNORM, "313782"))),
        rx_request("r-read", medicationCodeableConcept=concept((READV2, "di4.."))),
        rx_request("r-both", medicationCodeableConcept=concept((RXNORM, "313782"), (DMD_URI, "322341003"))),
        rx_request("r-to-rx", medicationReference={"reference": "Medication/rx-only"}),
        rx_request("r-to-local", medicationReference={"reference": "Medication/local-only"}),
        rx_request("r-to-mixed", medicationReference={"reference": "Medication/mixed"}),
        rx_request("r-to-absent", medicationReference={"reference": "Medication/not-in-extract"}),
        # Not used wins over a missing patient: no rule could have used it either way.
        rx_request("r-nobody", medicationReference={"reference": "Medication/rx-only"})
        | {"subject": {"reference": "Patient/nobody"}},
    ]
    return [
        *files,
        fx.write_ndjson(folder / "Medication.ndjson", meds),
        fx.write_ndjson(folder / "MedicationRequest.ndjson", requests),
    ]


def test_prescriptions_of_unread_medicines_are_counted_not_used(engine, tmp_path):
    files = _medicine_extract(tmp_path / "x")
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                MedicationIssue.source_resource_id, MedicationIssue.code_system, MedicationIssue.code
            ).order_by(MedicationIssue.source_resource_id)
        ).all()
        quarantined = conn.execute(
            select(Quarantine.resource_id, Quarantine.reason_code, Quarantine.field, Quarantine.file)
        ).all()
    assert stored == [("r-both", "dmd", "322341003"), ("r-to-mixed", "dmd", "322341003")]
    assert [(q.resource_id, q.reason_code, q.field) for q in quarantined] == [
        ("r-to-absent", "medication_dangling", "medicationReference")
    ]
    assert quarantined[0].file.endswith("MedicationRequest.ndjson")
    assert summary.not_used[f"MedicationRequest for a medicine {NOT_DMD}"] == 5
    assert summary.not_used[f"Medication {NOT_DMD}"] == 2
    # Stored Medication resources are the one with a dm+d code; the two others are not used.
    assert summary.read == summary.loaded + summary.quarantined
    assert summary.quarantined == 1
    kinds = summary.by_kind
    assert (kinds["MedicationRequest"].read, kinds["MedicationRequest"].stored) == (3, 2)
    assert kinds["MedicationRequest"].quarantined == 1
    assert (kinds["Medication"].read, kinds["Medication"].stored) == (1, 1)
    assert summary.read == 3 + 3 + 1  # organisation, GP, patient; three requests; one Medication


# --- item 3: references to things not in the extract -------------------------------------------


def _uuid(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def _entry(full_url: str, res: dict) -> dict:
    return {"fullUrl": full_url, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}


def synthea_bundle(patient_extra: dict | None = None) -> dict:
    """A Synthea-style transaction Bundle: urn:uuid fullUrls, records pointing at Encounters and
    Practitioners by urn:uuid or by a conditional reference, most of them not in the Bundle."""
    pat, enc = _uuid(1), _uuid(2)
    missing_enc, missing_gp = _uuid(90), _uuid(91)
    conditional_gp = {"reference": f"Practitioner?identifier={NPI}|9999999999"}
    conditional_org = {"reference": f"Organization?identifier={SYNTHEA_ID}|1a2b3c"}
    patient = fx.patient("syn-p1", fx.NHS_NUMBERS[1])
    del patient["generalPractitioner"]
    patient.update(patient_extra or {})
    entries = [
        _entry(_uuid(3), fx.organization("ZZ9001", "org-syn")),
        _entry(pat, patient),
        _entry(
            enc,
            {
                "resourceType": "Encounter",
                "id": "enc1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": pat},
                "participant": [{"individual": conditional_gp}],
                "serviceProvider": conditional_org,
                "location": [{"location": {"reference": "Location?identifier=https://example.org|loc9"}}],
            },
        ),
        _entry(
            _uuid(4),
            fx.condition("syn-c1", pat)
            | {
                "encounter": {"reference": missing_enc},
                "asserter": conditional_gp,
                "recorder": {"reference": missing_gp},
                "evidence": [{"detail": [{"reference": _uuid(92)}]}],
            },
        ),
        _entry(
            _uuid(5),
            {
                "resourceType": "Observation",
                "id": "syn-o1",
                "status": "final",
                "subject": {"reference": pat},
                "encounter": {"reference": enc},
                "performer": [{"reference": missing_gp}, conditional_org],
                "basedOn": [{"reference": "ServiceRequest/not-here"}],
                "partOf": [{"reference": "Procedure/not-here"}],
                "hasMember": [{"reference": _uuid(93)}],
                "derivedFrom": [{"reference": _uuid(94)}],
                "code": concept((LOINC, "29463-7"), (fx.SCT, "27113001")),
                "valueQuantity": {"value": 72.5, "unit": "kg"},
                "effectiveDateTime": "2024-06-01T10:00:00+01:00",
            },
        ),
        _entry(
            _uuid(6),
            fx.med_request("syn-m1", pat)
            | {
                "encounter": {"reference": missing_enc},
                "requester": conditional_gp,
                "recorder": {"reference": missing_gp},
                "basedOn": [{"reference": "CarePlan/not-here"}],
                "reasonReference": [{"reference": _uuid(95)}],
                "priorPrescription": {"reference": _uuid(96)},
                "performer": conditional_org,
            },
        ),
        _entry(
            _uuid(7),
            {
                "resourceType": "MedicationStatement",
                "id": "syn-s1",
                "status": "active",
                "subject": {"reference": pat},
                "context": {"reference": missing_enc},
                "informationSource": {"reference": missing_gp},
                "partOf": [{"reference": "MedicationAdministration/not-here"}],
                "derivedFrom": [{"reference": "MedicationRequest/not-here"}],
                "basedOn": [{"reference": "MedicationRequest/not-here"}],
                "medicationCodeableConcept": concept((fx.SCT, "322341003")),
                "effectiveDateTime": "2024-05-01",
            },
        ),
        # Coded by LOINC only (a vital sign): counted as not used, whatever it points at.
        _entry(
            _uuid(8),
            {
                "resourceType": "Observation",
                "id": "syn-o2",
                "status": "final",
                "subject": {"reference": pat},
                "encounter": {"reference": missing_enc},
                "code": concept((LOINC, "8867-4")),
                "effectiveDateTime": "2024-06-01",
            },
        ),
        # The subject by a conditional reference on the NHS number (no fullUrl needed).
        _entry(
            _uuid(9),
            fx.condition("syn-c2", code="195967001")
            | {
                "subject": {"reference": f"Patient?identifier={fx.NHS}|{fx.NHS_NUMBERS[1]}"},
                "encounter": {"reference": enc},
            },
        ),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_synthea_transaction_bundle_references_drop_nothing(engine, tmp_path):
    gp = {"generalPractitioner": [{"reference": _uuid(91)}]}  # a Practitioner not in the Bundle, untyped
    path = tmp_path / "synthea_patient.json"
    path.write_bytes(orjson.dumps(synthea_bundle(gp)))
    summary = load_extract(engine, [path], extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    with engine.connect() as conn:
        (patient,) = conn.execute(select(Patient.source_id, Patient.practice_id, Patient.usual_gp_id)).all()
        ods = conn.execute(select(Practice.ods_code).where(Practice.id == patient.practice_id)).scalar()
        events = conn.execute(
            select(ClinicalEvent.source_resource_id, ClinicalEvent.code, ClinicalEvent.value).order_by(
                ClinicalEvent.source_resource_id
            )
        ).all()
        meds = conn.execute(
            select(MedicationIssue.source_resource_id, MedicationIssue.code).order_by(
                MedicationIssue.source_resource_id
            )
        ).all()
    # The patient names no practice it can be placed by: filed under the extract's only practice.
    assert (patient.source_id, ods, patient.usual_gp_id) == ("syn-p1", "ZZ9001", None)
    assert events == [
        ("syn-c1", "82423001", None),
        ("syn-c2", "195967001", None),
        ("syn-o1", "27113001", 72.5),
    ]
    assert meds == [("syn-m1", "322341003"), ("syn-s1", "322341003")]
    assert summary.not_used["Encounter (a resource type recruit does not use)"] == 1
    assert (
        summary.not_used[
            "Observation coded only in systems recruit does not read (such as LOINC or local codes)"
        ]
        == 1
    )
    assert summary.read == summary.loaded == 7  # organisation, patient, 3 events, 2 prescriptions
    assert summary.by_kind["Patient"].stored == 1


def uk_core_records() -> list[dict]:
    """UK Core style: Practitioners and Organizations named by identifier (GMC, SDS, ODS),
    Encounters and Locations by id, none of them in the extract."""
    by_gmc = {"type": "Practitioner", "identifier": {"system": GMC, "value": "G9999991"}}
    by_sds = {"type": "Practitioner", "identifier": {"system": SDS_USER, "value": "999999999991"}}
    by_ods = {"type": "Organization", "identifier": {"system": fx.ODS, "value": "ZZ9009"}}
    location = {"reference": "Location/not-here"}
    return [
        fx.condition("uk-c1")
        | {"recorder": by_gmc, "asserter": by_sds, "encounter": {"reference": "Encounter/not-here"}},
        {
            "resourceType": "Observation",
            "id": "uk-o1",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "performer": [by_gmc, by_ods],
            "encounter": {"reference": "Encounter/not-here"},
            "specimen": {"reference": "Specimen/not-here"},
            "device": {"reference": "Device/not-here"},
            "code": concept((fx.SCT, "271649006")),
            "valueQuantity": {"value": 128, "unit": "mm[Hg]"},
            "effectiveDateTime": "2024-04-04",
        },
        fx.med_request("uk-m1")
        | {
            "requester": by_sds,
            "recorder": by_gmc,
            "performer": by_ods,
            "encounter": {"reference": "Encounter/not-here"},
            "dispenseRequest": {"quantity": {"value": 28}, "performer": by_ods},
            "supportingInformation": [location],
        },
        {
            "resourceType": "MedicationStatement",
            "id": "uk-s1",
            "status": "active",
            "subject": {"reference": "Patient/p1"},
            "informationSource": by_gmc,
            "context": {"reference": "Encounter/not-here"},
            "basedOn": [{"reference": "MedicationRequest/not-here"}],
            "medicationCodeableConcept": concept((fx.SCT, "322341003")),
            "effectiveDateTime": "2024-02-02",
        },
    ]


def test_uk_core_references_by_identifier_drop_nothing(engine, tmp_path):
    folder = tmp_path / "x"
    files = fx.base_extract(folder)
    files.append(fx.write_ndjson(folder / "Records.ndjson", uk_core_records()))
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    with engine.connect() as conn:
        events = conn.execute(
            select(ClinicalEvent.source_resource_id, ClinicalEvent.code).order_by(
                ClinicalEvent.source_resource_id
            )
        ).all()
        meds = conn.execute(
            select(MedicationIssue.source_resource_id, MedicationIssue.quantity).order_by(
                MedicationIssue.source_resource_id
            )
        ).all()
        practices = conn.execute(select(Practice.ods_code)).scalars().all()
    assert events == [("uk-c1", "82423001"), ("uk-o1", "271649006")]
    assert meds == [("uk-m1", 28.0), ("uk-s1", None)]
    assert practices == ["ZZ9001"]  # an Organization named only as a performer makes no practice
    assert summary.read == summary.loaded == 3 + 4


def _patients_extract(folder, patients: list[dict], orgs: list[dict]):
    return [
        fx.write_ndjson(folder / "Organization.ndjson", orgs),
        fx.write_ndjson(folder / "Patient.ndjson", patients),
        fx.write_ndjson(
            folder / "Condition.ndjson",
            [fx.condition(f"c-{p['id']}", f"Patient/{p['id']}") for p in patients],
        ),
    ]


def test_general_practitioner_not_in_the_extract_keeps_the_patient(engine, tmp_path):
    """The practice told by ODS code (the Organization referred to is absent), by a conditional
    reference, or as the extract's only practice when only a Practitioner is named."""
    patients = [
        # Organization reference absent from the extract, with its ODS code beside it.
        fx.patient(
            "a",
            fx.NHS_NUMBERS[0],
            generalPractitioner=[
                {
                    "type": "Organization",
                    "reference": "Organization/not-in-extract",
                    "identifier": {"system": fx.ODS, "value": "ZZ9002"},
                }
            ],
        ),
        # A Practitioner not in the extract, and the practice by ODS identifier only.
        fx.patient(
            "b",
            fx.NHS_NUMBERS[1],
            generalPractitioner=[
                {"type": "Practitioner", "identifier": {"system": SDS_USER, "value": "999999999992"}},
                {"type": "Organization", "identifier": {"system": fx.ODS, "value": "ZZ9001"}},
            ],
        ),
        # A conditional reference on the ODS code.
        fx.patient(
            "c",
            fx.NHS_NUMBERS[2],
            generalPractitioner=[{"reference": f"Organization?identifier={fx.ODS}|ZZ9001"}],
        ),
        # A PractitionerRole: names a person, not the practice.
        fx.patient(
            "d",
            fx.NHS_NUMBERS[3],
            generalPractitioner=[
                {"reference": "PractitionerRole/not-here"},
                {"reference": "Organization/org1"},
            ],
        ),
    ]
    files = _patients_extract(tmp_path / "x", patients, [fx.organization()])
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    with engine.connect() as conn:
        placed = dict(conn.execute(PLACED).all())
        events = conn.execute(select(ClinicalEvent.source_resource_id)).scalars().all()
    assert placed == {"a": "ZZ9002", "b": "ZZ9001", "c": "ZZ9001", "d": "ZZ9001"}
    assert sorted(events) == ["c-a", "c-b", "c-c", "c-d"]
    assert summary.read == summary.loaded == 1 + 4 + 4


def test_general_practitioner_naming_an_absent_organization_uses_the_only_practice(engine, tmp_path):
    patients = [
        fx.patient(
            "a", fx.NHS_NUMBERS[0], generalPractitioner=[{"reference": "Organization/not-in-extract"}]
        ),
        fx.patient("b", fx.NHS_NUMBERS[1], generalPractitioner=[{"reference": _uuid(97)}]),
    ]
    files = _patients_extract(tmp_path / "x", patients, [fx.organization()])
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0, summary.quarantined_by_reason
    with engine.connect() as conn:
        ods = conn.execute(PLACED).all()
    assert sorted(ods) == [("a", "ZZ9001"), ("b", "ZZ9001")]
    assert summary.read == summary.loaded == 5


def test_absent_organization_in_an_extract_of_several_practices_is_quarantined_truly(engine, tmp_path):
    """Which practice cannot be told: the patient is quarantined, and says why; its records
    say their patient was quarantined."""
    patients = [
        fx.patient(
            "a", fx.NHS_NUMBERS[0], generalPractitioner=[{"reference": "Organization/not-in-extract"}]
        ),
        fx.patient("b", fx.NHS_NUMBERS[1]),
        fx.patient("c", fx.NHS_NUMBERS[2], generalPractitioner=[{"reference": "Organization/org2"}]),
    ]
    orgs = [fx.organization(), fx.organization("ZZ9002", "org2")]
    files = _patients_extract(tmp_path / "x", patients, orgs)
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Quarantine.resource_id, Quarantine.reason_code, Quarantine.field, Quarantine.reason
            ).order_by(Quarantine.resource_id)
        ).all()
    assert [(r.resource_id, r.reason_code, r.field) for r in rows] == [
        ("a", "practice_unknown", "generalPractitioner"),
        ("c-a", "patient_quarantined", "subject"),
    ]
    assert "by an ODS code or an Organization in this extract" in rows[0].reason
    assert summary.read == summary.loaded + summary.quarantined == 2 + 6


def test_a_medication_id_repeated_is_never_fatal_nor_doubles_a_prescription(engine, tmp_path):
    """The same Medication id twice (once without a dm+d code; or with two codes): the load
    goes on, and a prescription pointing at it is stored once, with a dm+d code."""
    folder = tmp_path / "x"
    files = fx.base_extract(folder)
    meds = [
        {"resourceType": "Medication", "id": "twice", "code": concept((RXNORM, "313782"))},
        {"resourceType": "Medication", "id": "twice", "code": concept((DMD_URI, "39720311000001101"))},
        {"resourceType": "Medication", "id": "two-codes", "code": concept((DMD_URI, "39720311000001101"))},
        {"resourceType": "Medication", "id": "two-codes", "code": concept((DMD_URI, "322341003"))},
    ]
    requests = [
        rx_request("r-twice", medicationReference={"reference": "Medication/twice"}),
        rx_request("r-two-codes", medicationReference={"reference": "Medication/two-codes"}),
    ]
    files.append(fx.write_ndjson(folder / "Medication.ndjson", meds))
    files.append(fx.write_ndjson(folder / "MedicationRequest.ndjson", requests))
    summary = load_extract(engine, files, extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        stored = conn.execute(
            select(MedicationIssue.source_resource_id, MedicationIssue.code).order_by(
                MedicationIssue.source_resource_id
            )
        ).all()
    assert stored == [("r-twice", "39720311000001101"), ("r-two-codes", "322341003")]
    assert summary.not_used[f"Medication {NOT_DMD}"] == 1
    assert summary.read == summary.loaded + summary.quarantined
