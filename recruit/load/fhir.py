"""Reads the fields recruit uses from FHIR resources (R4, and GP Connect STU3 where they agree).

fhir.resources validates a resource in about 1 ms, far too slow for a whole practice, so this
module reads plain dicts and checks only what the engine uses; `--strict` adds full R4B
validation elsewhere. Every problem becomes Invalid naming the field, so the record can be
quarantined with a reason instead of failing the run.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from recruit.load.codes import DMD, SNOMED, normalise_code, system_name
from recruit.load.rows import (
    EpisodeRow,
    EventRow,
    HoldRow,
    MedicationRow,
    MedicineRow,
    OrgRow,
    PatientRow,
    PractitionerRow,
)
from recruit.load.status import (
    ERROR_CODES,
    concept_codes,
    condition_status,
    medication_status,
    observation_status,
)
from recruit.load.values import DateReader, Invalid, clean_postcode, nhs_number_is_valid
from recruit.nhs_numbers import digits_of

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEMS = ("https://fhir.nhs.uk/Id/ods-organization-code", "https://fhir.nhs.uk/Id/ods-site-code")
PROFESSIONAL_SYSTEMS = (
    "https://fhir.hl7.org.uk/Id/gmc-number",
    "https://fhir.hl7.org.uk/Id/gmp-number",
    "https://fhir.nhs.uk/Id/sds-user-id",
)
STU3_PROFILE_MARK = "/STU3/"
# generalPractitioner entries naming a person, not the practice.
GP_TYPES = ("Practitioner", "PractitionerRole")
GP_PREFIXES = ("Practitioner/", "PractitionerRole/")
# Why a medicine is not used, in words for practice staff (issue 16 item 3).
NOT_DMD = "coded only in systems recruit does not read (no dm+d code; such as RxNorm or local drug codes)"

# Records with nothing wrong that recruit cannot use, in words for practice staff.
NO_ODS_CODE = "Organization with no ODS code: recruit names practices by ODS code"
NAMELESS_PRACTITIONER = "Practitioner with no name to sign letters with"

# Resource types recruit reads; anything else is counted as "not used", never silently lost.
USED_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Medication",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "EpisodeOfCare",
)
# A GMS (regular) registration in the CareConnect / GP Connect RegistrationType code system; the
# other codes (temporary, emergency, immediately necessary, private...) are not one.
# How an EpisodeOfCare's staged columns are named in the record, for quarantine reasons.
EPISODE_FIELDS = {"resource_id": "id", "patient_ref": "patient", "practice_ref": "managingOrganization"}
REGISTRATION_TYPE_MARKS = ("registrationtype", "registration-type")
GMS_REGISTRATION_CODES = ("R", "GMS")


# A code to read, where it is, its quantity (a valueQuantity, or None) and where that is.
Concept = tuple[Any, str, Any, str]


class NotUsed(Exception):
    """A well-formed record recruit has no use for (for example a prescription authorisation).

    `parsed` carries rows that still matter to other records: a Medication coded only in
    systems recruit does not read is staged with no code, so a prescription pointing at it is
    counted as not used too, rather than quarantined as pointing at nothing."""

    def __init__(self, what: str, parsed: Parsed | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.parsed = parsed


@dataclass(slots=True)
class Parsed:
    """What one resource contributes to the load."""

    patients: list[PatientRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    medications: list[MedicationRow] = field(default_factory=list)
    medicines: list[MedicineRow] = field(default_factory=list)
    orgs: list[OrgRow] = field(default_factory=list)
    practitioners: list[PractitionerRow] = field(default_factory=list)
    episodes: list[EpisodeRow] = field(default_factory=list)
    stu3: bool = False
    # How the reader names each staged column (CSV: the file's column names); None: FHIR paths.
    fields: dict[str, str] | None = None


def _list(res: dict[str, Any], name: str) -> list[Any]:
    """A repeating element. A single object where FHIR has a list (GP Connect writes
    Patient.generalPractitioner so) can only mean a list of one; text or a number there is not
    a list of anything, and stays a wrong type."""
    value = res.get(name)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise Invalid("wrong_type", f"'{name}' should be a list", name)
    return value


def _items(value: Any) -> list[Any]:
    """As _list, best effort and never raising (for what a broken record still says)."""
    if isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else []


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("wrong_type", f"'{name}' should be an object", name)
    return value


def _bool(value: Any, name: str) -> bool:
    """A FHIR boolean: true or false, never text or a number read as a default."""
    if not isinstance(value, bool):
        raise Invalid("wrong_type", f"'{name}' should be true or false", name)
    return value


def _strs(value: list[Any], name: str) -> list[str]:
    """A list of texts (name.given, address.line): an item of another type is not dropped."""
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid("wrong_type", f"'{name}[{i}]' should be text", f"{name}[{i}]")
    return value


def _str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"'{name}' should be text", name)
    return value


def reference_keys(ref: Any, name: str) -> list[str]:
    """The keys a Reference can be matched by: Type/id, a urn: fullUrl, or an identifier."""
    if type(ref) is dict and len(ref) == 1:  # the usual {"reference": "Patient/123"}: fast path
        target = ref.get("reference")
        if type(target) is str and target.count("/") == 1 and not target.startswith(("urn:", "#")):
            return [target.rstrip("/")] if not target.endswith("/") else []
    ref = _dict(ref, name)
    keys: list[str] = []
    target = _str(ref.get("reference"), f"{name}.reference")
    if target:
        if target.startswith(("urn:uuid:", "urn:oid:", "#")):
            keys.append(target)
        elif "?" in target:
            # A conditional reference (transaction Bundles, Synthea): Type?identifier=system|value.
            keys.extend(_conditional_keys(target))
        else:
            parts = target.split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2:
                keys.append(f"{parts[-2]}/{parts[-1]}")
    ident = _dict(ref.get("identifier"), f"{name}.identifier")
    system, value = ident.get("system"), ident.get("value")
    if isinstance(value, str) and value:
        if system in ODS_SYSTEMS:
            keys.append(f"ods:{value.strip().upper()}")
        elif system == NHS_NUMBER_SYSTEM:
            keys.append(f"nhs:{value.replace(' ', '')}")
    return keys


def _conditional_keys(target: str) -> list[str]:
    """The keys a conditional reference names: only ODS codes and NHS numbers can be matched."""
    for part in target.split("?", 1)[1].split("&"):
        name, _, value = part.partition("=")
        system, bar, code = unquote(value).partition("|")
        if name == "identifier" and bar and code:
            if system in ODS_SYSTEMS:
                return [f"ods:{code.strip().upper()}"]
            if system == NHS_NUMBER_SYSTEM:
                return [f"nhs:{code.replace(' ', '')}"]
    return []


def own_keys(res: dict[str, Any], full_url: str | None) -> list[str]:
    keys = []
    rid = res.get("id")
    if isinstance(rid, str) and rid:
        keys.append(f"{res['resourceType']}/{rid}")
    if full_url:
        if full_url.startswith(("urn:uuid:", "urn:oid:")):
            keys.append(full_url)
        else:
            parts = full_url.rstrip("/").split("/")
            if len(parts) >= 2:
                key = f"{parts[-2]}/{parts[-1]}"
                if key not in keys:
                    keys.append(key)
    return keys


def codings(concept: Any, name: str) -> Iterator[tuple[str, str, str | None]]:
    """Every coding of a CodeableConcept in a system recruit knows, as (system, code, term)."""
    concept = _dict(concept, name)
    text = concept.get("text") if isinstance(concept.get("text"), str) else None
    for i, coding in enumerate(_list(concept, "coding")):
        coding = _dict(coding, f"{name}.coding[{i}]")
        system = system_name(coding.get("system"))
        code = coding.get("code")
        if system is None:
            continue
        if not isinstance(code, str):
            raise Invalid(
                "wrong_type", f"'{name}.coding[{i}].code' should be text", f"{name}.coding[{i}].code"
            )
        clean = normalise_code(system, code)
        if clean is None:
            raise Invalid(
                "code_malformed",
                f"'{code[:30]}' is not a well-formed {system} code",
                f"{name}.coding[{i}].code",
            )
        display = coding.get("display") if isinstance(coding.get("display"), str) else text
        yield system, clean, (display or None) and display[:255]


def _is_stu3(res: dict[str, Any]) -> bool:
    meta = res.get("meta")
    if isinstance(meta, dict):
        for profile in meta.get("profile") or []:
            if isinstance(profile, str) and STU3_PROFILE_MARK in profile:
                return True
    return False


class FhirReader:
    """Turns one resource into rows; `dates` carries the extract date and counts repairs."""

    def __init__(self, dates: DateReader) -> None:
        self.dates = dates
        self._readers = {name: getattr(self, f"_read_{name}") for name in USED_TYPES}

    def read(self, res: Any, full_url: str | None = None) -> Parsed:
        if not isinstance(res, dict):
            raise Invalid("not_a_resource", "the record is not a JSON object", None)
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            raise Invalid("not_a_resource", "the record has no resourceType", "resourceType")
        rid = res.get("id")
        if rid is not None and not isinstance(rid, str):
            raise Invalid("wrong_type", "'id' should be text", "id")
        method = self._readers.get(rtype)
        if method is None:
            raise NotUsed(f"{rtype} (a resource type recruit does not use)")
        out = Parsed(stu3="meta" in res and _is_stu3(res))
        method(res, full_url, out)
        return out

    # --- what a broken record still says (issue 14 case 2) ----------------------------------

    def holds(self, res: Any, full_url: str | None = None) -> list[HoldRow]:
        """What a record that could not be read still signals, read best-effort and never
        raising: a Patient that has died or left, or the codes of an Observation or Condition
        (such as dissent from research use). Each holds its person back from letters."""
        if not isinstance(res, dict):
            return []
        try:
            rtype = res.get("resourceType")
            if rtype == "Patient":
                return _patient_holds(res, full_url, self.dates.latest_iso)
            if rtype in ("Observation", "Condition"):
                return _code_holds(res)
        except Exception:  # noqa: BLE001 - best effort on a record already known to be broken
            return []
        return []

    # --- reference data -------------------------------------------------------------------

    def _read_Organization(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        ods = None
        for i, ident in enumerate(_list(res, "identifier")):
            ident = _dict(ident, f"identifier[{i}]")
            if ident.get("system") in ODS_SYSTEMS:
                value = _str(ident.get("value"), f"identifier[{i}].value")  # a number: wrong type
                if value and value.strip():
                    ods = value.strip().upper()
                    break
        if not ods:
            # Bulk Data and Synthea exports hold many (hospitals, clinics, payers). Nothing is
            # wrong with them, and a patient naming one is simply one whose practice is not
            # known by ODS code (the loader decides what that means).
            raise NotUsed(NO_ODS_CODE)
        lines, postcode = _address(_list(res, "address"), self.dates.latest_iso, ORG_ADDRESS_USES)
        phone = None
        for i, telecom in enumerate(_list(res, "telecom")):
            telecom = _dict(telecom, f"telecom[{i}]")
            if telecom.get("system") == "phone" and isinstance(telecom.get("value"), str):
                phone = telecom["value"]
                break
        out.orgs.append(
            OrgRow(
                keys=[*own_keys(res, full_url), f"ods:{ods}"],
                ods_code=ods,
                name=_str(res.get("name"), "name") or ods,
                address=lines,
                postcode=postcode,
                telephone=phone,
            )
        )

    def _read_Practitioner(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        names = _list(res, "name")
        title, given, family = _human_name(names, self.dates.latest_iso)
        if not (family or given):
            # Only name.text (EPS cancellation examples write {"text": "Jackie Clark"}).
            title, given, family = _name_from_text(names, self.dates.latest_iso)
        code = None
        for i, ident in enumerate(_list(res, "identifier")):
            ident = _dict(ident, f"identifier[{i}]")
            if ident.get("system") in PROFESSIONAL_SYSTEMS and isinstance(ident.get("value"), str):
                code = ident["value"]
                break
        if not (family or given):
            # Nothing wrong with the record; recruit just cannot sign a letter with it.
            raise NotUsed(NAMELESS_PRACTITIONER)
        keys = own_keys(res, full_url)
        if not keys:
            raise Invalid("id_missing", "the practitioner has no id to be referred to by", "id")
        out.practitioners.append(
            PractitionerRow(
                keys=keys,
                source_id=str(res.get("id") or full_url),
                title=title,
                given_name=given,
                family_name=family,
                professional_code=code,
            )
        )

    def _read_Medication(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        code = _medicine_code(res.get("code"), "code")
        keys = own_keys(res, full_url)
        if code is None:
            # Coded only in systems no codelist names (RxNorm in Synthea, a supplier's local drug
            # codes): nothing wrong with it. Its keys are still staged, without a code, so the
            # prescriptions that point at it are counted as not used, not as pointing at nothing.
            raise NotUsed(
                f"Medication {NOT_DMD}",
                Parsed(medicines=[MedicineRow(key, None, None, None) for key in keys]),
            )
        if not keys:
            raise Invalid("id_missing", "the medication has no id to be referred to by", "id")
        out.medicines.extend(MedicineRow(key, *code) for key in keys)

    # --- the patient ----------------------------------------------------------------------

    def _read_Patient(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        # A patient without a verified NHS number (a temporary resident, example data) is still
        # stored with their records and counted; the search leaves them out at a step of its own
        # and no letter can be written to them (issue 16). Their number, if any, still finds
        # records that name them by it.
        nhs, number = _nhs_number(res)
        keys = own_keys(res, full_url)
        if not keys:
            raise Invalid("id_missing", "the patient has no id", "id")
        # A year or month alone is a range: both ends are kept, so age is decided the safe way.
        dob, dob_latest = self.dates.read_range(res.get("birthDate"), "birthDate")
        title, given, family = _human_name(_list(res, "name"), self.dates.latest_iso)
        lines, postcode = _address(_list(res, "address"), self.dates.latest_iso)
        gender = _str(res.get("gender"), "gender")
        sex = gender if gender in ("female", "male", "other", "unknown") else "unknown"

        death = None
        if "deceasedDateTime" in res:
            death = self.dates.read(res["deceasedDateTime"], "deceasedDateTime")
        elif "deceasedBoolean" in res and _bool(res["deceasedBoolean"], "deceasedBoolean"):
            # (A wrong type, "true" as text, is quarantined by _bool: never read as a default.)
            # Known dead, date unknown: the extract date is the latest it can be.
            death = self.dates.latest_iso
            self.dates.repaired += 1
        if "active" in res:
            _bool(res["active"], "active")

        practice_refs: list[str] = []
        gp_refs: list[str] = []
        for i, ref in enumerate(_list(res, "generalPractitioner")):
            keys_i = reference_keys(ref, f"generalPractitioner[{i}]")
            rtype = _dict(ref, "generalPractitioner").get("type")
            if rtype in GP_TYPES or any(k.startswith(GP_PREFIXES) for k in keys_i):
                gp_refs.extend(keys_i)
            else:
                # The ODS code first: it names the practice even when the Organization the
                # reference points at is not in the extract.
                practice_refs.extend(sorted(keys_i, key=lambda k: not k.startswith("ods:")))
        if "managingOrganization" in res:
            practice_refs.extend(reference_keys(res["managingOrganization"], "managingOrganization"))

        reg_start, reg_end = self._registration(res)
        if reg_start is None and reg_end is None:
            # PDS shape: the practice's identifier (or the reference) carries the period.
            reg_start, reg_end = self._gp_period(res)
        # Failing both, an EpisodeOfCare of the extract may give it (the loader, in SQL).
        stated = reg_start is not None or reg_end is not None
        # Failing both, a practice named in generalPractitioner (or managingOrganization) of an
        # active record is a registration at the extract date whose start is unknown: start and
        # end stay NULL, and each rule says how an unknown start counts (`unknown_start`).
        if res.get("active") is False and reg_end is None:
            # An inactive record is not registered on the extract date: its registration ended
            # the day before at the latest (registration_end is the last day registered).
            reg_end = (self.dates.latest - dt.timedelta(days=1)).isoformat()

        interpreter, language = _communication(res)
        out.patients.append(
            PatientRow(
                keys=[*keys, f"nhs:{number}"] if number else keys,
                source_id=str(res.get("id") or full_url),
                nhs_number=nhs,
                title=title,
                given_name=given,
                family_name=family,
                date_of_birth=dob,
                sex=sex,
                address=lines,
                postcode=postcode,
                practice_ref=practice_refs[0] if practice_refs else None,
                gp_ref=gp_refs[0] if gp_refs else None,
                registration_start=reg_start,
                registration_end=reg_end,
                date_of_death=death,
                needs_interpreter=interpreter,
                language=language,
                date_of_birth_latest=dob_latest,
                registration_stated=stated,
            )
        )

    def _registration(self, res: dict[str, Any]) -> tuple[str | None, str | None]:
        """Registration period from the UK registration-details extension: CareConnect R4
        `valuePeriod`, or the GP Connect / CareConnect STU3 complex extension's
        `registrationPeriod` sub-extension. One without a period (GP Connect examples carry
        only `preferredBranchSurgery`) says nothing about dates."""
        for i, ext in enumerate(_list(res, "extension")):
            ext = _dict(ext, f"extension[{i}]")
            url = ext.get("url") or ""
            if not isinstance(url, str) or "registration" not in url.lower():
                continue
            period = ext.get("valuePeriod")
            for j, sub in enumerate(_list(ext, "extension")):
                sub = _dict(sub, f"extension[{i}].extension[{j}]")
                if "period" in str(sub.get("url", "")).lower():
                    period = sub.get("valuePeriod")
            if period is not None:
                return self._period(period, f"extension[{i}].valuePeriod")
        return None, None

    def _gp_period(self, res: dict[str, Any]) -> tuple[str | None, str | None]:
        """Registration period from a generalPractitioner naming a practice: PDS puts it in
        `identifier.period`; a period extension on the reference is read the same way."""
        for i, ref in enumerate(_list(res, "generalPractitioner")):
            ref = _dict(ref, f"generalPractitioner[{i}]")
            ident = _dict(ref.get("identifier"), f"generalPractitioner[{i}].identifier")
            if ref.get("type") == "Practitioner" or str(ref.get("reference", "")).startswith("Practitioner/"):
                continue
            if "period" in ident:
                return self._period(ident["period"], f"generalPractitioner[{i}].identifier.period")
            for j, ext in enumerate(_list(ref, "extension")):
                ext = _dict(ext, f"generalPractitioner[{i}].extension[{j}]")
                if "period" in str(ext.get("url", "")).lower() and "valuePeriod" in ext:
                    return self._period(ext["valuePeriod"], f"generalPractitioner[{i}].extension[{j}]")
        return None, None

    def _period(self, raw: Any, name: str, label: str = "registration") -> tuple[str | None, str | None]:
        """A registration period's start and end; an end after the extract date is a planned
        deregistration (still registered)."""
        period = _dict(raw, name)
        start = self.dates.read(period.get("start"), f"{label}.start", required=False)
        end = period.get("end")
        end_date = None
        if end:
            try:
                end_date = self.dates.read(end, f"{label}.end", required=False)
            except Invalid as exc:
                if exc.code != "date_in_future":
                    raise
        return start, end_date

    def _read_EpisodeOfCare(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        """A registration episode (CareConnect / UK Core EpisodeOfCare): its patient, practice
        and period. Whether it is used is decided in the loader, once the patient is known."""
        status = _str(res.get("status"), "status")
        if status in ("entered-in-error", "cancelled"):
            raise NotUsed(f"EpisodeOfCare {status}")
        if status in ("planned", "waitlist"):
            raise NotUsed("EpisodeOfCare not yet begun (planned or on a waiting list)")
        registration = _registration_type(res)
        if registration is False:
            raise NotUsed("EpisodeOfCare of another kind of care or registration, not a GMS registration")
        ref = res.get("patient")
        keys = reference_keys(ref, "patient") if ref is not None else []
        if not keys:
            raise Invalid("patient_missing", "the episode does not say whose it is", "patient")
        practice = None
        if res.get("managingOrganization") is not None:
            org_keys = reference_keys(res["managingOrganization"], "managingOrganization")
            org_keys.sort(key=lambda k: not k.startswith("ods:"))
            practice = org_keys[0] if org_keys else None
        start, end = self._period(res.get("period"), "period", "period")
        if status == "finished" and end is None:
            # Finished on a date not given: not registered on the extract date, at the latest.
            end = (self.dates.latest - dt.timedelta(days=1)).isoformat()
        out.fields = EPISODE_FIELDS
        out.episodes.append(EpisodeRow(keys[0], practice, registration, start, end, res.get("id")))

    # --- what the record says ---------------------------------------------------------------

    def _date_of(self, choice: str, *candidates: tuple[Any, str]) -> str:
        """A record's date: the first of the places it may be given. With none given, the reason
        names the choice (onset[x]) and every place looked in, since no one field is missing."""
        raw, name = _first(*candidates)
        if name is None:
            looked = ", ".join(where for _, where in candidates)
            raise Invalid("date_missing", f"the date is missing (looked for {looked})", choice)
        date = self.dates.read(raw, name)
        assert date is not None
        return date

    def _subject(self, res: dict[str, Any]) -> str:
        ref = res.get("subject", res.get("patient"))
        if ref is None:
            raise Invalid("patient_missing", "the record does not say which patient it belongs to", "subject")
        keys = reference_keys(ref, "subject")
        if not keys:
            raise Invalid("patient_missing", "the patient reference is empty", "subject")
        return keys[0]

    def _events(
        self, res: dict[str, Any], date: str, concepts: list[Concept], status: str, out: Parsed
    ) -> None:
        patient = self._subject(res)
        rid = res.get("id")
        seen: set[tuple[str, str]] = set()
        for concept, name, quantity, quantity_name in concepts:
            # Each code carries its own value: a blood pressure's systolic and diastolic codes
            # are components, each with its own valueQuantity (the top level has none).
            value, unit = _quantity(quantity, quantity_name)
            for system, code, term in codings(concept, name):
                if (system, code) in seen:
                    continue
                seen.add((system, code))
                out.events.append(EventRow(patient, date, system, code, term, value, unit, rid, status))
        if not seen:
            # Coded only in systems no rule can name (LOINC vital signs, a supplier's local codes):
            # nothing a search could find, and nothing wrong with the record, so it is counted as
            # not used rather than quarantined (issue 16: example extracts lost thousands so).
            kind = res.get("resourceType") if isinstance(res.get("resourceType"), str) else "record"
            raise NotUsed(
                f"{kind} coded only in systems recruit does not read (such as LOINC or local codes)"
            )

    def _read_Condition(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        if ERROR_CODES.intersection(concept_codes(res.get("verificationStatus"), "verificationStatus")):
            raise NotUsed("Condition entered in error or refuted")
        status = condition_status(res)
        onset_period = _dict(res.get("onsetPeriod"), "onsetPeriod")
        date = self._date_of(
            "onset[x]",
            (res.get("onsetDateTime"), "onsetDateTime"),
            (onset_period.get("start"), "onsetPeriod.start"),
            (res.get("recordedDate"), "recordedDate"),
            (res.get("assertedDate"), "assertedDate"),  # STU3
        )
        self._events(
            res, date, [(res.get("code"), "code", res.get("valueQuantity"), "valueQuantity")], status, out
        )

    def _read_Observation(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        if res.get("status") == "entered-in-error":
            raise NotUsed("Observation entered in error")
        status = observation_status(res.get("status"))
        period = _dict(res.get("effectivePeriod"), "effectivePeriod")
        date = self._date_of(
            "effective[x]",
            (res.get("effectiveDateTime"), "effectiveDateTime"),
            (period.get("start"), "effectivePeriod.start"),
            (res.get("effectiveInstant"), "effectiveInstant"),  # R4's precise choice (UK Core uses it)
            (res.get("issued"), "issued"),
        )
        concepts: list[Concept] = [(res.get("code"), "code", res.get("valueQuantity"), "valueQuantity")]
        for i, comp in enumerate(_list(res, "component")):
            comp = _dict(comp, f"component[{i}]")
            where = f"component[{i}]"
            concepts.append(
                (comp.get("code"), f"{where}.code", comp.get("valueQuantity"), f"{where}.valueQuantity")
            )
        self._events(res, date, concepts, status, out)

    def _read_MedicationRequest(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        if res.get("intent") in ("plan", "proposal"):
            raise NotUsed("MedicationRequest authorisation (intent plan), not an issue")
        if res.get("status") in ("entered-in-error", "draft"):
            raise NotUsed(f"MedicationRequest with status {res.get('status')}")
        status = medication_status(res)
        # An issue's date is when it was valid from: GP Connect copies the authorisation's date
        # into every issue's authoredOn, and gives each issue's own in validityPeriod.start.
        dispense = res.get("dispenseRequest")
        validity = dispense.get("validityPeriod") if type(dispense) is dict else None
        if validity is None:  # the usual R4 issue: dated by authoredOn (the fast path)
            date = self.dates.read(res.get("authoredOn"), "authoredOn")
        else:
            validity = _dict(validity, "dispenseRequest.validityPeriod")
            date = self._date_of(
                "authoredOn",
                (validity.get("start"), "dispenseRequest.validityPeriod.start"),
                (res.get("authoredOn"), "authoredOn"),
            )
        self._medication(res, date, _course(res), status, out)

    def _read_MedicationStatement(self, res: dict[str, Any], full_url: str | None, out: Parsed) -> None:
        if res.get("status") == "entered-in-error":
            raise NotUsed("MedicationStatement entered in error")
        period = _dict(res.get("effectivePeriod"), "effectivePeriod")
        status = medication_status(res)
        date = self._date_of(
            "effective[x]",
            (res.get("effectiveDateTime"), "effectiveDateTime"),
            (period.get("start"), "effectivePeriod.start"),
            (res.get("dateAsserted"), "dateAsserted"),
        )
        self._medication(res, date, _course(res), status, out)

    def _medication(
        self, res: dict[str, Any], date: str | None, course: str, status: str, out: Parsed
    ) -> None:
        assert date is not None
        patient = self._subject(res)
        dispense = _dict(res.get("dispenseRequest"), "dispenseRequest")
        quantity = self._supply_quantity(dispense.get("quantity"))
        code = None
        medication_ref = None
        if "medicationCodeableConcept" in res:
            code = _medicine_code(res["medicationCodeableConcept"], "medicationCodeableConcept")
            if code is None:
                # As for events: no codelist can name the medicine, and nothing is wrong with the
                # record, so it is counted as not used rather than quarantined.
                raise NotUsed(f"{res['resourceType']} for a medicine {NOT_DMD}")
        elif "medicationReference" in res:
            keys = reference_keys(res["medicationReference"], "medicationReference")
            if not keys:
                raise Invalid("reference_invalid", "the medication reference is empty", "medicationReference")
            if keys[0].startswith("#"):
                code = self._contained_medicine(res, keys[0][1:])
            else:
                medication_ref = keys[0]
        else:
            raise Invalid("code_missing", "the prescription does not say which medicine", "medication[x]")
        system, value, term = code if code else (None, None, None)
        out.medications.append(
            MedicationRow(
                patient, date, system, value, term, quantity, course, res.get("id"), medication_ref, status
            )
        )

    def _supply_quantity(self, raw: Any) -> float | None:
        """dispenseRequest.quantity.value, which no rule uses: a problem with it leaves the
        quantity unknown rather than losing the prescription. GP Connect writes the number as
        text ("28"), read as that number and counted as repaired; its quantity-text extension
        (Extension-CareConnect-GPC-MedicationQuantityText-1, "capsule(s)") is words, never a
        number guessed from them."""
        value = raw.get("value") if isinstance(raw, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value.strip()):
            self.dates.repaired += 1
            return float(value)
        return None

    def _contained_medicine(self, res: dict[str, Any], local_id: str) -> tuple[str, str, str | None]:
        for i, contained in enumerate(_list(res, "contained")):
            contained = _dict(contained, f"contained[{i}]")
            if contained.get("resourceType") == "Medication" and contained.get("id") == local_id:
                code = _medicine_code(contained.get("code"), f"contained[{i}].code")
                if code:
                    return code
                raise NotUsed(f"{res['resourceType']} for a medicine {NOT_DMD}")
        raise Invalid(
            "reference_dangling",
            f"the contained medication #{local_id} is missing",
            "medicationReference",
        )


VERIFIED = "01"  # NHS number verification status: "Number present and verified"


def _nhs_number(res: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the NHS number if verified, else None; the number, valid, whether verified or not).

    A number that fails its check digit is none at all. A verification-status extension (UK
    Core / CareConnect NHSNumberVerificationStatus) with any code but 01 (present and verified)
    leaves the number unverified: traced numbers are what opt-outs and past invitations are
    matched by, so only they can be written to."""
    for i, ident in enumerate(_list(res, "identifier")):
        ident = _dict(ident, f"identifier[{i}]")
        if ident.get("system") != NHS_NUMBER_SYSTEM:
            continue
        value = ident.get("value")
        if value is None:
            continue
        _str(value, f"identifier[{i}].value")  # a number, not text: wrong type, as for any field
        number = digits_of(value)
        if not nhs_number_is_valid(number):
            continue
        verified = True
        for j, ext in enumerate(_list(ident, "extension")):
            ext = _dict(ext, f"identifier[{i}].extension[{j}]")
            if "nhsnumberverificationstatus" in str(ext.get("url", "")).lower():
                codes = concept_codes(ext.get("valueCodeableConcept"), f"identifier[{i}].extension[{j}]")
                verified = VERIFIED in codes
        return (number if verified else None), number
    return None, None


def _patient_holds(res: dict[str, Any], full_url: str | None, today: str) -> list[HoldRow]:
    nhs = None
    for ident in _items(res.get("identifier")):
        if isinstance(ident, dict) and ident.get("system") == NHS_NUMBER_SYSTEM:
            value = digits_of(str(ident.get("value")))
            if nhs_number_is_valid(value):
                nhs = value
                break
    rid = res.get("id")
    source_id = rid if isinstance(rid, str) and rid else full_url
    if nhs is None and not source_id:
        return []
    signals = []
    if _signals_death(res):
        signals.append("death")
    if _signals_left(res, today):
        signals.append("left")
    return [HoldRow(None, nhs, source_id, signal) for signal in signals]


def _plainly_false(value: Any) -> bool:
    return (
        value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false"))
    )


def _signals_death(res: dict[str, Any]) -> bool:
    """Any death element that is not plainly absent or false: "true" as text, a bad date..."""
    if "deceasedDateTime" in res and res["deceasedDateTime"] not in (None, ""):
        return True
    return not _plainly_false(res.get("deceasedBoolean"))


def _signals_left(res: dict[str, Any], today: str) -> bool:
    """An inactive record (false, or "false" as text), or a registration that has ended (or whose
    end cannot be read)."""
    active = res.get("active")
    if active is False or (isinstance(active, str) and active.strip().lower() == "false"):
        return True
    for ext in _items(res.get("extension")):
        if not isinstance(ext, dict) or "registration" not in str(ext.get("url", "")).lower():
            continue
        periods = [ext.get("valuePeriod")] + [
            sub.get("valuePeriod") for sub in _items(ext.get("extension")) if isinstance(sub, dict)
        ]
        if any(_ended(period, today) for period in periods):
            return True
    for gp in _items(res.get("generalPractitioner")):  # PDS: the practice identifier's period
        ident = gp.get("identifier") if isinstance(gp, dict) else None
        if isinstance(ident, dict) and _ended(ident.get("period"), today):
            return True
    return False


def _ended(period: Any, today: str) -> bool:
    """A period whose end is on or before today, or cannot be read."""
    if isinstance(period, dict) and period.get("end") not in (None, ""):
        end = period["end"]
        m = _PARTIAL_DATE.match(end.strip()) if isinstance(end, str) else None
        return m is None or end.strip()[:10] <= today
    return False


def _code_holds(res: dict[str, Any]) -> list[HoldRow]:
    """One hold per coding in a system recruit reads whose code is well formed."""
    ref = res.get("subject", res.get("patient"))
    try:
        keys = reference_keys(ref, "subject") if ref is not None else []
    except Invalid:
        keys = []
    if not keys:
        return []
    concepts = [res.get("code")]
    concepts += [c.get("code") for c in _items(res.get("component")) if isinstance(c, dict)]
    found: dict[tuple[str, str], HoldRow] = {}
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        for coding in _items(concept.get("coding")):
            if not isinstance(coding, dict):
                continue
            system = system_name(coding.get("system"))
            code = coding.get("code")
            if isinstance(code, int) and not isinstance(code, bool):
                code = str(code)  # a number where text belongs: still the code it names
            if system is None or not isinstance(code, str):
                continue
            clean = normalise_code(system, code)
            if clean is not None:
                found.setdefault((system, clean), HoldRow(keys[0], None, None, "code", system, clean))
    return list(found.values())


def _registration_type(res: dict[str, Any]) -> bool | None:
    """Whether an EpisodeOfCare is a GMS registration: True, False (typed as something else),
    or None (no type given). The type is read from `type`, or from a registration-type
    extension (some GP system feeds put it there)."""
    concepts = [(c, f"type[{i}]") for i, c in enumerate(_list(res, "type"))]
    for i, ext in enumerate(_list(res, "extension")):
        ext = _dict(ext, f"extension[{i}]")
        url = str(ext.get("url", "")).lower()
        if any(mark in url for mark in REGISTRATION_TYPE_MARKS):
            if "valueCodeableConcept" in ext:
                concepts.append((ext["valueCodeableConcept"], f"extension[{i}].valueCodeableConcept"))
            elif "valueCoding" in ext:
                concepts.append(({"coding": [ext["valueCoding"]]}, f"extension[{i}].valueCoding"))
    if not concepts:
        return None
    for concept, name in concepts:
        for j, coding in enumerate(_list(_dict(concept, name), "coding")):
            coding = _dict(coding, f"{name}.coding[{j}]")
            system = str(coding.get("system", "")).lower()
            if any(mark in system for mark in REGISTRATION_TYPE_MARKS) and (
                coding.get("code") in GMS_REGISTRATION_CODES
            ):
                return True
    return False


def _first(*candidates: tuple[Any, str]) -> tuple[Any, str | None]:
    for value, name in candidates:
        if value not in (None, ""):
            return value, name
    return None, None


def _medicine_code(concept: Any, name: str) -> tuple[str, str, str | None] | None:
    for system, code, term in codings(concept, name):
        if system in (DMD, SNOMED):
            return DMD, code, term
    return None


def _course(res: dict[str, Any]) -> str:
    concept = _dict(res.get("courseOfTherapyType"), "courseOfTherapyType")
    for coding in _list(concept, "coding"):
        code = _dict(coding, "courseOfTherapyType.coding").get("code")
        if code == "acute":
            return "acute"
        if isinstance(code, str) and code.startswith("continuous"):
            return "repeat"
    for ext in _list(res, "extension"):  # GP Connect STU3 PrescriptionType
        ext = _dict(ext, "extension")
        if "PrescriptionType" in str(ext.get("url", "")):
            for coding in _list(_dict(ext.get("valueCodeableConcept"), "extension"), "coding"):
                code = _dict(coding, "extension.coding").get("code")
                if code == "acute":
                    return "acute"
                if isinstance(code, str) and code.startswith("repeat"):
                    return "repeat"
    return "unknown"


def _quantity(raw: Any, name: str = "valueQuantity") -> tuple[float | None, str | None]:
    q = _dict(raw, name)
    value = q.get("value")
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("wrong_type", f"'{name}.value' should be a number", f"{name}.value")
    unit = q.get("unit") if isinstance(q.get("unit"), str) else None
    return float(value), unit and unit[:40]


# Which names and addresses may be used, best first (issue 14 case 9). A name in use `old` or
# `maiden`, or a nickname, is never chosen; nor is an address in use `old`, nor a `work` or
# `billing` address for a patient (a letter about employment support must not go to a workplace).
NAME_USES: tuple[str | None, ...] = ("usual", "official", None, "temp")
PATIENT_ADDRESS_USES: tuple[str | None, ...] = ("home", None, "temp")
ORG_ADDRESS_USES: tuple[str | None, ...] = ("work", None, "home", "temp")
_PLAIN_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _bound(raw: Any, name: str, *, latest: bool) -> str | None:
    """A period's start or end as an ISO date: for a partial date its last possible day when
    `latest`, else its first, so an unclear period is read the safe way. None: unreadable."""
    if not isinstance(raw, str):
        raise Invalid("wrong_type", f"'{name}' should be text", name)
    m = _PARTIAL_DATE.match(raw.strip())
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    if day:
        return f"{year}-{month}-{day}"
    if month:
        return f"{year}-{month}-{'31' if latest else '01'}"  # compared as text: 31 sorts last
    return f"{year}-{'12-31' if latest else '01-01'}"


def _current(entry: dict[str, Any], today: str, name: str) -> tuple[bool, str]:
    """Whether a name's or address's period covers the extract date, and when it began.

    Not current: it begins after the extract date, or ends on or before it (a letter arrives
    later still), or its period cannot be read."""
    if "period" not in entry:
        return True, ""
    period = _dict(entry.get("period"), f"{name}.period")
    start = end = None
    if period.get("start") is not None:
        start = _bound(period["start"], f"{name}.period.start", latest=True)
        if start is None or start > today:
            return False, ""
    if period.get("end") is not None:
        end = _bound(period["end"], f"{name}.period.end", latest=False)
        if end is None or end <= today:
            return False, ""
    return True, start or ""


def _best(
    entries: list[Any], today: str, uses: tuple[str | None, ...], name: str, *, text: bool = False
) -> dict[str, Any] | None:
    """The entry of the most preferred use that is current now, whatever the list's order; among
    equals the one that began latest, then the first listed. `text`: names with only `text`."""
    best: tuple[int, str, int] | None = None
    chosen = None
    for i, entry in enumerate(entries):
        entry = _dict(entry, f"{name}[{i}]")
        use = _str(entry.get("use"), f"{name}[{i}].use")
        if use not in uses:
            continue
        if text:
            if not (_str(entry.get("text"), f"{name}[{i}].text") or "").strip():
                continue
        elif not _has_content(entry, name):
            continue
        current, began = _current(entry, today, f"{name}[{i}]")
        if not current:
            continue
        rank = (uses.index(use), _invert(began), i)
        if best is None or rank < best:
            best, chosen = rank, entry
    return chosen


def _invert(iso: str) -> str:
    """Sorts later dates first (no date last)."""
    return "".join(chr(0x7F - ord(c)) for c in iso) if iso else "\x7f"


def _has_content(entry: dict[str, Any], name: str) -> bool:
    if name == "name":
        return bool(entry.get("family") or entry.get("given"))
    return bool(entry.get("line") or entry.get("postalCode") or entry.get("text"))


def _human_name(names: list[Any], today: str) -> tuple[str | None, str | None, str | None]:
    """Title, given names and family name of the current usual or official name."""
    chosen = _best(names, today, NAME_USES, "name")
    if not chosen:
        return None, None, None
    prefix = _strs(_list(chosen, "prefix"), "name.prefix")
    given = _strs(_list(chosen, "given"), "name.given")
    family = _str(chosen.get("family"), "name.family")
    return " ".join(prefix) or None, " ".join(given) or None, family or None


# Titles a name written as text may begin with (any case, with or without a full stop).
TITLES = frozenset(
    ("dr", "mr", "mrs", "ms", "miss", "mx", "prof", "professor", "sir", "dame", "rev", "revd", "sister")
)


def _name_from_text(names: list[Any], today: str) -> tuple[str | None, str | None, str | None]:
    """Title, given names and family name from a current name's `text` alone ("Dr Jane A Smith",
    or "SMITH, Jane"): titles first, the last word as family name, the words between as given
    names. Letters sign with title, given and family joined, so the signature reads as written
    whichever way an unusual name is split."""
    chosen = _best(names, today, NAME_USES, "name", text=True)
    if not chosen:
        return None, None, None
    written = " ".join(chosen["text"].split())
    family, comma, rest = (part.strip() for part in written.partition(","))
    words = rest.split() if comma else family.split()  # "Family, Given", as some systems list
    titles = []
    while words and words[0].rstrip(".").lower() in TITLES:
        titles.append(words.pop(0))
    if not comma:
        family = words.pop() if words else ""  # a title alone is no name
    if not family:
        return None, None, None
    return " ".join(titles) or None, " ".join(words) or None, family


def _address(
    addresses: list[Any], today: str, uses: tuple[str | None, ...] = PATIENT_ADDRESS_USES
) -> tuple[str | None, str | None]:
    """The current address to write to (home, else one with no use, else a current temporary
    one) as newline-joined lines, and its postcode; none when no address is usable."""
    chosen = _best(addresses, today, uses, "address")
    if not chosen:
        return None, None
    lines = [line.strip() for line in _strs(_list(chosen, "line"), "address.line") if line.strip()]
    if not lines and isinstance(chosen.get("text"), str):
        lines = [part.strip() for part in re.split(r"[\n,]", chosen["text"]) if part.strip()]
    for part in ("city", "district"):
        value = _str(chosen.get(part), f"address.{part}")
        if value and value.strip() and value.strip() not in lines:
            lines.append(value.strip())
    return "\n".join(lines) or None, clean_postcode(_str(chosen.get("postalCode"), "address.postalCode"))


def _communication(res: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether an interpreter is needed, and the preferred language (if not English).

    From Patient.communication, and from the NHS communication extension that PDS (UK Core
    Extension-UKCore-NHSCommunication) and CareConnect STU3 (Extension-CareConnect-
    NHSCommunication-1) put on the Patient instead: sub-extensions `language`,
    `interpreterRequired` and `preferred`. A language marked preferred wins; else the first."""
    interpreter = False
    languages: list[tuple[bool, str]] = []  # (preferred, language), in the record's order
    for i, comm in enumerate(_list(res, "communication")):
        comm = _dict(comm, f"communication[{i}]")
        language = _language(comm.get("language"), f"communication[{i}].language")
        if language:
            languages.append((comm.get("preferred") is True, language))
        for ext in _list(comm, "extension"):
            ext = _dict(ext, "communication.extension")
            if "interpreter" in str(ext.get("url", "")).lower() and "valueBoolean" in ext:
                interpreter = (
                    _bool(ext["valueBoolean"], "communication.extension.valueBoolean") or interpreter
                )
    for i, ext in enumerate(_list(res, "extension")):
        ext = _dict(ext, "extension")
        url = str(ext.get("url", "")).lower()
        if "interpreterrequired" in url and "valueBoolean" in ext:
            interpreter = _bool(ext["valueBoolean"], "extension.valueBoolean") or interpreter
        if "nhscommunication" not in url:
            continue
        language, preferred = None, False
        for sub in _list(ext, "extension"):
            sub = _dict(sub, "extension.extension")
            sub_url = str(sub.get("url", "")).lower()
            if "interpreter" in sub_url and "valueBoolean" in sub:
                interpreter = _bool(sub["valueBoolean"], "extension.extension.valueBoolean") or interpreter
            elif sub_url == "language":
                language = _language(sub.get("valueCodeableConcept"), f"extension[{i}].language")
            elif sub_url == "preferred" and sub.get("valueBoolean") is True:
                preferred = True
        if language:
            languages.append((preferred, language))
    chosen = next((lang for preferred, lang in languages if preferred), None)
    return interpreter, chosen or (languages[0][1] if languages else None)


def _language(concept: Any, name: str) -> str | None:
    """The language a CodeableConcept names (its display, else its code), or None when it is
    English or names none. A code that is not text is passed over, as before."""
    for i, coding in enumerate(_list(_dict(concept, name), "coding")):
        coding = _dict(coding, f"{name}.coding[{i}]")
        code = coding.get("code")
        if isinstance(code, str) and code.strip() and not code.lower().startswith("en"):
            display = coding.get("display")
            return (display if isinstance(display, str) and display.strip() else code)[:40]
    return None
