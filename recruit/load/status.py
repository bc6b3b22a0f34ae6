"""What state a record was in: the status vocabulary stored with every event and prescription.

A record's status says whether it is evidence at all (a cancelled prescription, a resolved
condition, a provisional diagnosis), and each rule decides which statuses it counts (issue 14
case 11). The reader only records the status faithfully; it never drops a record for its status
except those entered in error or refuted (counted as "not used"), and drafts.

clinical_event.status:
  recorded     an Observation final, amended, corrected, unknown or with no status; a Condition
               with no clinicalStatus; every CSV event
  active       a Condition whose clinicalStatus is active, recurrence or relapse
  resolved     a Condition whose clinicalStatus is inactive, remission or resolved
  unconfirmed  a Condition whose verificationStatus is unconfirmed, provisional or differential
               (whatever its clinicalStatus); an Observation registered or preliminary
  cancelled    an Observation cancelled

medication_issue.status:
  issued       every CSV issue
  active, completed, stopped, on_hold, cancelled, intended, not_taken, unknown
               the FHIR status code with '-' written '_' (unknown also when it has no status)
  do_not_perform  MedicationRequest.doNotPerform is true, whatever its status

NULL (rows loaded before statuses were stored) counts as recorded for events and unknown for
prescriptions.
"""

from __future__ import annotations

from typing import Any

from recruit.load.values import Invalid

# --- events (clinical_event.status) ---
RECORDED = "recorded"
ACTIVE = "active"
RESOLVED = "resolved"
UNCONFIRMED = "unconfirmed"
CANCELLED = "cancelled"
EVENT_STATUSES = (RECORDED, ACTIVE, RESOLVED, UNCONFIRMED, CANCELLED)

# --- prescriptions (medication_issue.status) ---
ISSUED = "issued"
COMPLETED = "completed"
STOPPED = "stopped"
ON_HOLD = "on_hold"
INTENDED = "intended"
NOT_TAKEN = "not_taken"
UNKNOWN = "unknown"
DO_NOT_PERFORM = "do_not_perform"
MEDICATION_STATUSES = (
    ISSUED,
    ACTIVE,
    COMPLETED,
    STOPPED,
    ON_HOLD,
    CANCELLED,
    INTENDED,
    NOT_TAKEN,
    UNKNOWN,
    DO_NOT_PERFORM,
)

# What a NULL status (a row loaded before this vocabulary) means.
EVENT_STATUS_WHEN_NULL = RECORDED
MEDICATION_STATUS_WHEN_NULL = UNKNOWN

# Codes that mean the record should never have been written: not used, not stored.
ERROR_CODES = frozenset({"entered-in-error", "refuted"})

_CLINICAL = {
    "active": ACTIVE,
    "recurrence": ACTIVE,
    "relapse": ACTIVE,
    "inactive": RESOLVED,
    "remission": RESOLVED,
    "resolved": RESOLVED,
}
_UNCONFIRMED_VERIFICATION = frozenset({"unconfirmed", "provisional", "differential"})
_KNOWN_VERIFICATION = _UNCONFIRMED_VERIFICATION | {"confirmed", "unknown", "entered-in-error", "refuted"}
_OBSERVATION = {
    "final": RECORDED,
    "amended": RECORDED,
    "corrected": RECORDED,
    "unknown": RECORDED,
    "registered": UNCONFIRMED,
    "preliminary": UNCONFIRMED,
    "cancelled": CANCELLED,
}
# R4 MedicationRequest and MedicationStatement, and their STU3 forms (draft and entered-in-error
# are not used, so they are not here).
_MEDICATION = {
    "active": ACTIVE,
    "completed": COMPLETED,
    "stopped": STOPPED,
    "on-hold": ON_HOLD,
    "cancelled": CANCELLED,
    "intended": INTENDED,
    "not-taken": NOT_TAKEN,
    "unknown": UNKNOWN,
}


def concept_codes(value: Any, name: str) -> list[str]:
    """The codes of a status element: an R4 CodeableConcept, or an STU3 plain code."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        raise Invalid("wrong_type", f"'{name}' should be an object", name)
    found = value.get("coding")
    if found is None:
        return []
    if isinstance(found, dict):  # one coding where FHIR has a list: a list of one (as fhir._list)
        found = [found]
    if not isinstance(found, list):
        raise Invalid("wrong_type", f"'{name}.coding' should be a list", f"{name}.coding")
    codes = []
    for i, coding in enumerate(found):
        if not isinstance(coding, dict):
            raise Invalid("wrong_type", f"'{name}.coding[{i}]' should be an object", f"{name}.coding[{i}]")
        code = coding.get("code")
        if code is not None and not isinstance(code, str):
            raise Invalid(
                "wrong_type", f"'{name}.coding[{i}].code' should be text", f"{name}.coding[{i}].code"
            )
        if code:
            codes.append(code)
    return codes


def condition_status(res: dict[str, Any]) -> str:
    """A Condition's status; an unconfirmed diagnosis is unconfirmed whatever its clinicalStatus."""
    verification = concept_codes(res.get("verificationStatus"), "verificationStatus")
    if any(code in _UNCONFIRMED_VERIFICATION for code in verification):
        return UNCONFIRMED
    unknown = [c for c in verification if c not in _KNOWN_VERIFICATION]
    if unknown:
        raise Invalid(
            "status_invalid", "the verificationStatus is not a code FHIR defines", "verificationStatus"
        )
    clinical = concept_codes(res.get("clinicalStatus"), "clinicalStatus")
    for code in clinical:
        if code in _CLINICAL:
            return _CLINICAL[code]
    if clinical:
        raise Invalid("status_invalid", "the clinicalStatus is not a code FHIR defines", "clinicalStatus")
    return RECORDED


def observation_status(raw: Any) -> str:
    """An Observation's status (entered-in-error is handled before: not used)."""
    if raw is None:
        return RECORDED
    if not isinstance(raw, str):
        raise Invalid("wrong_type", "'status' should be text", "status")
    found = _OBSERVATION.get(raw)
    if found is None:
        raise Invalid("status_invalid", "the status is not a code FHIR defines for an Observation", "status")
    return found


def medication_status(res: dict[str, Any]) -> str:
    """A prescription's status; doNotPerform true means do_not_perform whatever the status says."""
    raw = res.get("status")
    if raw is not None and not isinstance(raw, str):
        raise Invalid("wrong_type", "'status' should be text", "status")
    dnp = res.get("doNotPerform")
    if dnp is not None and not isinstance(dnp, bool):
        raise Invalid("wrong_type", "'doNotPerform' should be true or false", "doNotPerform")
    if dnp:
        return DO_NOT_PERFORM
    if raw is None:
        return UNKNOWN
    found = _MEDICATION.get(raw)
    if found is None:
        raise Invalid("status_invalid", "the status is not a code FHIR defines for a prescription", "status")
    return found
