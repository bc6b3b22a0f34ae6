"""The rows a loader hands to the database, whatever shape the extract came in (FHIR or CSV).

Dates are ISO text (YYYY-MM-DD), as DateReader gives them.
"""

from __future__ import annotations

from typing import NamedTuple


class OrgRow(NamedTuple):
    keys: list[str]
    ods_code: str
    name: str
    address: str | None
    postcode: str | None
    telephone: str | None


class PractitionerRow(NamedTuple):
    keys: list[str]
    source_id: str
    title: str | None
    given_name: str | None
    family_name: str | None
    professional_code: str | None


class PatientRow(NamedTuple):
    keys: list[str]
    source_id: str
    nhs_number: str
    title: str | None
    given_name: str | None
    family_name: str | None
    date_of_birth: str
    sex: str
    address: str | None
    postcode: str | None
    practice_ref: str | None
    gp_ref: str | None
    registration_start: str | None
    registration_end: str | None
    date_of_death: str | None
    needs_interpreter: bool
    language: str | None


class EventRow(NamedTuple):
    patient_ref: str
    event_date: str
    code_system: str
    code: str
    term: str | None
    value: float | None
    unit: str | None
    resource_id: str | None


class MedicationRow(NamedTuple):
    patient_ref: str
    issue_date: str
    code_system: str | None
    code: str | None
    term: str | None
    quantity: float | None
    course: str
    resource_id: str | None
    medication_ref: str | None


class MedicineRow(NamedTuple):
    """A Medication resource, for prescriptions that point at it rather than carry the code."""

    key: str
    code_system: str
    code: str
    term: str | None
