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
    nhs_number: str | None  # None: no verified NHS number (stored; never written to)
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
    # The latest the birth date can be when only a year or month is recorded (None: exact).
    date_of_birth_latest: str | None = None
    # The record itself gives the registration period (registration-details extension, or the
    # PDS generalPractitioner period): an EpisodeOfCare does not override it.
    registration_stated: bool = False


class EventRow(NamedTuple):
    patient_ref: str
    event_date: str
    code_system: str
    code: str
    term: str | None
    value: float | None
    unit: str | None
    resource_id: str | None
    status: str | None = None  # recruit.load.status vocabulary


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
    status: str | None = None  # recruit.load.status vocabulary


class HoldRow(NamedTuple):
    """A quarantined record that still signals death, leaving, or a coded entry such as dissent:
    its person is held back from letters (recruit.models.PersonHold)."""

    patient_ref: str | None  # a key of the patient it belongs to (None when it is the patient)
    nhs_number: str | None
    source_id: str | None
    signal: str  # death, left or code
    code_system: str | None = None
    code: str | None = None


class MedicineRow(NamedTuple):
    """A Medication resource, for prescriptions that point at it rather than carry the code."""

    key: str
    code_system: str | None  # None: a Medication coded only in systems recruit does not read
    code: str | None
    term: str | None


class EpisodeRow(NamedTuple):
    """A registration EpisodeOfCare: the period it gives its patient, when the Patient record
    does not give one itself (the loader decides, in SQL)."""

    patient_ref: str
    practice_ref: str | None  # managingOrganization, ODS code first
    registration: bool | None  # True: typed as a GMS registration; None: no type given
    period_start: str | None
    period_end: str | None  # None: still registered (or a planned end after the extract date)
    resource_id: str | None
