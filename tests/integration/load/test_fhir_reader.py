"""The narrow FHIR reader: UK idioms read right, and bad values become reasons, not crashes."""

from __future__ import annotations

import datetime as dt

import pytest

from recruit.load.fhir import FhirReader, NotUsed
from recruit.load.values import DateReader, Invalid
from tests.integration.load import fhir_samples as fx


def reader() -> FhirReader:
    return FhirReader(DateReader(dt.date(2026, 11, 1)))


def test_patient_fields_and_references():
    p = reader().read(fx.patient()).patients[0]
    assert p.nhs_number == fx.NHS_NUMBERS[0]
    assert (p.given_name, p.family_name, p.sex) == ("Pat", "Tester", "female")
    assert p.postcode == "ZZ1 1ZZ"
    assert p.address == "2 Low Road\nTesttown"
    assert p.practice_ref == "Organization/org1" and p.gp_ref == "Practitioner/gp1"
    assert "nhs:" + fx.NHS_NUMBERS[0] in p.keys


def test_general_practitioner_as_an_ods_identifier():
    res = fx.patient(
        generalPractitioner=[{"identifier": {"system": fx.ODS, "value": "a20047"}, "type": "Organization"}]
    )
    assert reader().read(res).patients[0].practice_ref == "ods:A20047"


def test_registration_period_and_death():
    ext = [
        {
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1",
            "extension": [
                {"url": "registrationPeriod", "valuePeriod": {"start": "2001-01-02", "end": "2020-03-04"}}
            ],
        }
    ]
    p = reader().read(fx.patient(extension=ext, deceasedDateTime="2020-03-04T10:00:00+00:00")).patients[0]
    assert p.registration_start == "2001-01-02"
    assert p.registration_end == "2020-03-04"
    assert p.date_of_death == "2020-03-04"


def test_deceased_boolean_takes_the_extract_date():
    r = reader()
    assert r.read(fx.patient(deceasedBoolean=True)).patients[0].date_of_death == "2026-11-01"


def test_datetime_without_zone_is_repaired_and_utc_is_moved_to_london():
    r = reader()
    c = r.read(fx.condition(onsetDateTime="2024-06-30T23:30:00")).events[0]
    assert c.event_date == "2024-06-30" and r.dates.repaired == 1
    c = r.read(fx.condition(onsetDateTime="2024-06-30T23:30:00Z")).events[0]
    assert c.event_date == "2024-07-01"  # British Summer Time
    c = r.read(fx.condition(onsetDateTime="2024-01-31T23:30:00Z")).events[0]
    assert c.event_date == "2024-01-31"  # GMT


def test_any_coding_counts_and_read_v2_term_codes_are_trimmed():
    concept = {
        "coding": [
            {"system": "https://EMISWeb/A82038", "code": "LOCAL1"},
            {"system": "http://read.info/readv2", "code": "1M52.00"},
            {"system": fx.SCT, "code": "82423001"},
        ]
    }
    events = reader().read(fx.condition(code=None) | {"code": concept}).events
    assert {(e.code_system, e.code) for e in events} == {("readv2", "1M52."), ("snomedct", "82423001")}


def test_observation_components_are_read():
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01",
        "code": {"coding": [{"system": "http://loinc.org", "code": "93025-5"}]},
        "component": [{"code": {"coding": [{"system": fx.SCT, "code": "73438004"}]}}],
    }
    assert [e.code for e in reader().read(obs).events] == ["73438004"]


@pytest.mark.parametrize("uri", ["https://dmd.nhs.uk", "https://dmd.nhs.uk/", "http://snomed.info/sct"])
def test_dmd_under_any_of_its_uris(uri):
    res = fx.med_request(medicationCodeableConcept={"coding": [{"system": uri, "code": "322341003"}]})
    m = reader().read(res).medications[0]
    assert (m.code_system, m.code, m.course, m.quantity) == ("dmd", "322341003", "repeat", 100.0)


def test_contained_and_referenced_medication():
    contained = fx.med_request(
        medicationCodeableConcept=None,
        medicationReference={"reference": "#med"},
        contained=[
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"coding": [{"system": fx.SCT, "code": "322341003"}]},
            }
        ],
    )
    del contained["medicationCodeableConcept"]
    assert reader().read(contained).medications[0].code == "322341003"
    referenced = fx.med_request(medicationReference={"reference": "Medication/x"})
    del referenced["medicationCodeableConcept"]
    m = reader().read(referenced).medications[0]
    assert m.code is None and m.medication_ref == "Medication/x"


def test_authorisations_are_not_issues():
    with pytest.raises(NotUsed):
        reader().read(fx.med_request(intent="plan"))


@pytest.mark.parametrize(
    "res, code, field",
    [
        (
            fx.patient(identifier=[{"system": fx.NHS, "value": 9990000018}]),
            "wrong_type",
            "identifier[0].value",
        ),
        (fx.patient(birthDate="2099-01-01"), "date_in_future", "birthDate"),
        (fx.patient(birthDate=19800501), "wrong_type", "birthDate"),
        (fx.patient(name="Pat Tester"), "wrong_type", "name"),
        (fx.condition(onsetDateTime="31/02/2024"), "date_invalid", "onsetDateTime"),
        (fx.condition(subject=None), "patient_missing", "subject"),
        (fx.med_request(authoredOn=None), "date_missing", "authoredOn"),
    ],
)
def test_bad_values_name_their_field(res, code, field):
    with pytest.raises(Invalid) as err:
        reader().read(res)
    assert err.value.code == code
    assert err.value.field == field


VERIFICATION = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"


def _verified(code: str) -> dict:
    concept = {
        "coding": [
            {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "code": code}
        ]
    }
    return {"url": VERIFICATION, "valueCodeableConcept": concept}


@pytest.mark.parametrize(
    "identifier, stored, keyed",
    [
        ([], None, None),  # a temporary resident: no number
        ([{"system": fx.NHS, "value": "9990000019"}], None, None),  # fails its check digit
        ([{"system": fx.NHS, "value": "999 000 0018"}], "9990000018", "9990000018"),
        (
            [{"system": fx.NHS, "value": "9990000018", "extension": [_verified("01")]}],
            "9990000018",
            "9990000018",
        ),
        # Present but not traced: not verified, yet still the number its records may name it by.
        ([{"system": fx.NHS, "value": "9990000018", "extension": [_verified("02")]}], None, "9990000018"),
        (
            [{"system": fx.NHS, "value": "9990000019"}, {"system": fx.NHS, "value": "9990000026"}],
            "9990000026",
            "9990000026",
        ),
    ],
)
def test_a_patient_without_a_verified_nhs_number_is_read_without_one(identifier, stored, keyed):
    [row] = reader().read(fx.patient(identifier=identifier)).patients
    assert row.nhs_number == stored
    assert [k for k in row.keys if k.startswith("nhs:")] == ([f"nhs:{keyed}"] if keyed else [])
    assert row.source_id == "p1" and "Patient/p1" in row.keys


def test_gp_connect_stu3_records_are_recognised_and_read():
    profile = "https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-ProblemHeader-Condition-1"
    res = fx.condition(meta={"profile": [profile]}, assertedDate="2019-05-06")
    del res["onsetDateTime"]
    parsed = reader().read(res)
    assert parsed.stu3 and parsed.events[0].event_date == "2019-05-06"
    statement = {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "meta": {
            "profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-MedicationStatement-1"]
        },
        "status": "active",
        "taken": "unk",
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2020-01-02"},
        "medicationReference": {"reference": "Medication/m1"},
        "extension": [
            {
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-PrescriptionType-1",
                "valueCodeableConcept": {"coding": [{"code": "repeat"}]},
            }
        ],
    }
    m = reader().read(statement).medications[0]
    assert (m.issue_date, m.course, m.medication_ref) == ("2020-01-02", "repeat", "Medication/m1")


def test_a_record_coded_only_in_other_systems_is_counted_not_quarantined():
    """LOINC or local codes only: nothing a rule can find and nothing wrong with the record."""
    res = fx.condition() | {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}}
    with pytest.raises(NotUsed) as err:
        reader().read(res)
    assert "Condition coded only in systems recruit does not read" in err.value.what
    # A usable coding beside the unfamiliar one is read; the other is ignored.
    both = fx.condition() | {
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "8480-6"},
                {"system": "http://snomed.info/sct", "code": "82423001"},
            ]
        }
    }
    parsed = reader().read(both)
    assert [(e.code_system, e.code) for e in parsed.events] == [("snomedct", "82423001")]


def test_observation_dated_by_effective_instant():
    """R4 lets effective[x] be an instant; an Observation dated only so is dated, not quarantined."""
    res = fx.condition() | {"resourceType": "Observation", "id": "o1", "status": "final"}
    del res["onsetDateTime"]
    res["effectiveInstant"] = "2024-06-30T23:30:00Z"
    event = reader().read(res).events[0]
    assert (event.event_date, event.code) == ("2024-07-01", "82423001")  # UK date (summer time)
