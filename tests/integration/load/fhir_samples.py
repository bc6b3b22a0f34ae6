"""Small hand-made FHIR resources in the shapes UK extracts use, for load tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SCT = "http://snomed.info/sct"
# Valid Modulus 11 numbers in the 999 range, which NHS England never issues to real people.
NHS_NUMBERS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"]


def organization(ods: str = "ZZ9001", rid: str = "org1") -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": rid,
        "identifier": [{"system": ODS, "value": ods}],
        "name": "Test Surgery",
        "address": [{"line": ["1 High Street"], "city": "Testtown", "postalCode": "ZZ1 1ZZ"}],
        "telecom": [{"system": "phone", "value": "01632 960000"}],
    }


def practitioner(rid: str = "gp1") -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": rid,
        "name": [{"family": "Example", "given": ["Alex"], "prefix": ["Dr"]}],
    }


def patient(rid: str = "p1", nhs: str = NHS_NUMBERS[0], **extra: Any) -> dict[str, Any]:
    res = {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": NHS, "value": nhs}],
        "name": [{"use": "official", "family": "Tester", "given": ["Pat"]}],
        "gender": "female",
        "birthDate": "1980-05-01",
        "address": [{"use": "home", "line": ["2 Low Road", "Testtown"], "postalCode": "zz11zz"}],
        "generalPractitioner": [{"reference": "Practitioner/gp1"}, {"reference": "Organization/org1"}],
    }
    res.update(extra)
    return res


def condition(rid: str = "c1", patient_ref: str = "Patient/p1", code: str = "82423001", **extra: Any):
    res = {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": SCT, "code": code, "display": "Chronic pain"}]},
        "onsetDateTime": "2024-02-03",
    }
    res.update(extra)
    return res


def med_request(rid: str = "m1", patient_ref: str = "Patient/p1", code: str = "322341003", **extra: Any):
    res = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "completed",
        "intent": "order",
        "subject": {"reference": patient_ref},
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code}]},
        "authoredOn": "2024-03-01",
        "courseOfTherapyType": {"coding": [{"code": "continuous"}]},
        "dispenseRequest": {"quantity": {"value": 100}},
    }
    res.update(extra)
    return res


def write_ndjson(path: Path, resources: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def base_extract(folder: Path) -> list[Path]:
    """A practice with one GP and one patient: the valid background for broken-input tests."""
    return [
        write_ndjson(folder / "Organization.ndjson", [organization()]),
        write_ndjson(folder / "Practitioner.ndjson", [practitioner()]),
        write_ndjson(folder / "Patient.ndjson", [patient()]),
    ]
