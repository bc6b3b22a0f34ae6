"""FHIR R4 resources as plain dicts (validated against fhir.resources R4B in tests only).

Registration is carried on Patient as an extension modelled on GP Connect's
Extension-CareConnect-GPC-RegistrationDetails-1 (a `registrationPeriod` sub-extension with a
Period); Patient.active is false once the patient has left or died. See README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from .codes import SYSTEM_URI, Code
from .people import GP, Person, Practice
from .record import Event, Issue, Record
from .util import iso

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
REGISTRATION_EXT = (
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"
)
COURSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"
COURSE_GROUP_SYSTEM = "urn:synthetic-ehr:prescription-course"
TABLET_SNOMED = "428673006"  # 'tablet' unit, as in the EPS examples (fhir-in-uk-primary-care.md s5)

_CLINICAL_ACTIVE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
}
_VERIFIED = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]
}
_PROBLEM = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": "problem-list-item",
            }
        ]
    }
]
_SOCIAL = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "social-history",
            }
        ]
    }
]
_COURSE = {
    "acute": {
        "coding": [{"system": COURSE_SYSTEM, "code": "acute", "display": "Short course (acute) therapy"}]
    },
    "continuous": {
        "coding": [{"system": COURSE_SYSTEM, "code": "continuous", "display": "Continuous long term therapy"}]
    },
}
_SUPPLY_28 = {"value": 28, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"}


def codeable(code: Code, dmd_system: str) -> dict:
    system = dmd_system if code.system == "dmd" else SYSTEM_URI[code.system]
    return {"coding": [{"system": system, "code": code.code, "display": code.term}], "text": code.term}


def organization(p: Practice) -> dict:
    return {
        "resourceType": "Organization",
        "id": p.ods,
        "identifier": [{"system": ODS_SYSTEM, "value": p.ods}],
        "active": True,
        "name": p.name,
        "telecom": [{"system": "phone", "value": p.phone, "use": "work"}],
        "address": [{"use": "work", "line": [p.line], "city": p.town, "postalCode": p.postcode}],
    }


def practitioner(gp: GP) -> dict:
    return {
        "resourceType": "Practitioner",
        "id": gp.id,
        "active": True,
        "name": [{"use": "official", "family": gp.family, "given": [gp.given], "prefix": ["Dr"]}],
    }


def patient(person: Person, practice: Practice) -> dict:
    period: dict = {"start": iso(person.reg_start)}
    left = person.dereg if person.dereg is not None else (person.death if person.death_coded else None)
    if left is not None:
        period["end"] = iso(left)
    res: dict = {
        "resourceType": "Patient",
        "id": person.id,
        "extension": [
            {
                "url": REGISTRATION_EXT,
                "extension": [{"url": "registrationPeriod", "valuePeriod": period}],
            }
        ],
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": person.nhs_number}],
        "active": left is None,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "gender": person.sex,
        "birthDate": iso(person.birth),
        "address": [
            {
                "use": "home",
                "line": [person.address_line],
                "city": person.town,
                "postalCode": person.postcode,
            }
        ],
        "generalPractitioner": [
            {"reference": f"Practitioner/{person.gp.id}"},
            {"reference": f"Organization/{practice.ods}"},
        ],
        "managingOrganization": {"reference": f"Organization/{practice.ods}"},
    }
    if person.death_coded and person.death is not None:
        res["deceasedDateTime"] = iso(person.death)
    return res


def condition(rid: str, pid: str, ev: Event, dmd_system: str) -> dict:
    day = iso(ev.date)
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": _CLINICAL_ACTIVE,
        "verificationStatus": _VERIFIED,
        "category": _PROBLEM,
        "code": codeable(ev.code, dmd_system),
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": day,
        "recordedDate": day,
    }


def observation(rid: str, pid: str, ev: Event, dmd_system: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": _SOCIAL,
        "code": codeable(ev.code, dmd_system),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": iso(ev.date),
    }


def medication_request(rid: str, person: Person, issue: Issue, dmd_system: str) -> dict:
    qty: dict = {"value": issue.quantity, "unit": issue.unit}
    if issue.unit == "tablet":
        qty["system"] = "http://snomed.info/sct"
        qty["code"] = TABLET_SNOMED
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active" if issue.active else "completed",
        "intent": "order",
        "groupIdentifier": {"system": COURSE_GROUP_SYSTEM, "value": issue.course_id},
        "courseOfTherapyType": _COURSE[issue.course],
        "medicationCodeableConcept": codeable(issue.code, dmd_system),
        "subject": {"reference": f"Patient/{person.id}"},
        "authoredOn": iso(issue.date),
        "requester": {"reference": f"Practitioner/{person.gp.id}"},
        "dosageInstruction": [{"text": issue.dosage}],
        "dispenseRequest": {"quantity": qty, "expectedSupplyDuration": _SUPPLY_28},
    }


def patient_resources(
    person: Person, practice: Practice, rec: Record, dmd_system: str
) -> dict[str, list[bytes]]:
    """Serialised resources for one patient, by type, in a fixed order."""
    dumps = orjson.dumps
    pid = person.id
    return {
        "Patient": [dumps(patient(person, practice))],
        "Condition": [
            dumps(condition(f"{pid}-c{i}", pid, ev, dmd_system)) for i, ev in enumerate(rec.conditions)
        ],
        "Observation": [
            dumps(observation(f"{pid}-o{i}", pid, ev, dmd_system)) for i, ev in enumerate(rec.observations)
        ],
        "MedicationRequest": [
            dumps(medication_request(f"{pid}-m{i}", person, iss, dmd_system))
            for i, iss in enumerate(rec.issues)
        ],
    }


def bundle_bytes(
    pid: str, resources: dict[str, list[bytes]], context: Sequence[bytes] = (), timestamp: str | None = None
) -> bytes:
    """A collection Bundle for one patient, assembled from already-serialised resources.

    Like a GP Connect structured record, it carries the practice Organization and the usual GP's
    Practitioner (`context`), so a bundle can be loaded on its own. `timestamp` (Bundle.timestamp)
    says when the extract was taken, so a loader knows which of two extracts is newer.
    """
    entries = [b'{"resource":' + r + b"}" for r in context] + [
        b'{"resource":' + r + b"}"
        for rtype in ("Patient", "Condition", "Observation", "MedicationRequest")
        for r in resources[rtype]
    ]
    head = b'{"resourceType":"Bundle","id":"bundle-' + pid.encode() + b'","type":"collection",'
    if timestamp is not None:
        head += b'"timestamp":"' + timestamp.encode() + b'",'
    head += b'"entry":['
    return head + b",".join(entries) + b"]}"


def manifest(transaction_time: str, counts: dict[str, int], urls: dict[str, str]) -> dict:
    """A Bulk Data $export completion manifest (relative URLs to the NDJSON files)."""
    return {
        "transactionTime": transaction_time,
        "request": "$export?_type=Patient,Organization,Practitioner,Condition,Observation,MedicationRequest",
        "requiresAccessToken": False,
        "output": [{"type": t, "url": urls[t], "count": counts[t]} for t in urls],
        "error": [],
    }
