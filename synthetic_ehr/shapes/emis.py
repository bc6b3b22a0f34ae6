"""The EMIS extract (IM1 bulk "Extract Service" CSV), as a data service receives it.

Column lists follow the EMIS extract version 5.4 header lists (endeavourhealth/Transforms,
emis/csv/schema). File names are `1_<Domain>_<Table>_<yyyyMMddHHmmss>_<agreement GUID>.csv`;
every row is keyed by PatientGuid (a GUID in braces, synthetic_ehr.keys.emis_guid); the NHS number
is only in Admin_Patient. Coded entries carry EMIS CodeIds, which Coding_ClinicalCode translates
to SNOMED CT and Coding_DrugCode to dm+d. EMIS Web holds entries as SNOMED CT, so a Read v2 or
CTV3 entry of the FHIR form is written as its SNOMED CT twin (shapes._crossmap); a Read v2 code
also stays visible as the CodeId's ReadTermId. A few rows are written twice with Deleted = true
(as EMIS sends a deletion), so a loader that ignores the flag finds records that are not there.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import uuid
from pathlib import Path

from ..codes import Code
from ..keys import emis_guid
from ..people import Person, Practice
from ..record import Record
from ..util import iso
from . import Shape, shape
from ._crossmap import snomed_twin

_NS = uuid.UUID("0b8f4a52-3c55-4d0e-9d7e-6e2a71c4d0a3")
AGREEMENT_GUID = str(uuid.uuid5(_NS, "sharing agreement")).upper()

PATIENT = [
    "PatientGuid", "OrganisationGuid", "UsualGpUserInRoleGuid", "Sex", "DateOfBirth", "DateOfDeath",
    "Title", "GivenName", "MiddleNames", "Surname", "DateOfRegistration", "NhsNumber", "PatientNumber",
    "PatientTypeDescription", "DummyType", "HouseNameFlatNumber", "NumberAndStreet", "Village", "Town",
    "County", "Postcode", "ResidentialInstituteCode", "NHSNumberStatus", "CarerName", "CarerRelation",
    "PersonGuid", "DateOfDeactivation", "Deleted", "SpineSensitive", "IsConfidential", "EmailAddress",
    "HomePhone", "MobilePhone", "ExternalUsualGPGuid", "ExternalUsualGP", "ExternalUsualGPOrganisation",
    "ProcessingId",
]  # fmt: skip
ORGANISATION = [
    "OrganisationGuid", "CDB", "OrganisationName", "ODSCode", "ParentOrganisationGuid",
    "CCGOrganisationGuid", "OrganisationType", "OpenDate", "CloseDate", "MainLocationGuid", "ProcessingId",
]  # fmt: skip
USER_IN_ROLE = [
    "UserInRoleGuid", "OrganisationGuid", "Title", "GivenName", "Surname", "JobCategoryCode",
    "JobCategoryName", "ContractStartDate", "ContractEndDate", "ProcessingId",
]  # fmt: skip
OBSERVATION = [
    "ObservationGuid", "PatientGuid", "OrganisationGuid", "EffectiveDate", "EffectiveDatePrecision",
    "EnteredDate", "EnteredTime", "ClinicianUserInRoleGuid", "EnteredByUserInRoleGuid",
    "ParentObservationGuid", "CodeId", "ProblemGuid", "AssociatedText", "ConsultationGuid", "Value",
    "NumericUnit", "ObservationType", "NumericRangeLow", "NumericRangeHigh", "DocumentGuid", "Deleted",
    "IsConfidential", "ProcessingId",
]  # fmt: skip
ISSUE_RECORD = [
    "IssueRecordGuid", "PatientGuid", "OrganisationGuid", "DrugRecordGuid", "EffectiveDate",
    "EffectiveDatePrecision", "EnteredDate", "EnteredTime", "ClinicianUserInRoleGuid",
    "EnteredByUserInRoleGuid", "CodeId", "Dosage", "Quantity", "QuantityUnit", "ProblemObservationGuid",
    "CourseDurationInDays", "EstimatedNhsCost", "IsConfidential", "Deleted", "ProcessingId",
]  # fmt: skip
CLINICAL_CODE = [
    "CodeId", "Term", "ReadTermId", "SnomedCTConceptId", "SnomedCTDescriptionId", "NationalCode",
    "NationalCodeCategory", "NationalDescription", "EmisCodeCategoryDescription", "ProcessingId",
    "ParentCodeId",
]  # fmt: skip
DRUG_CODE = ["CodeId", "Term", "DmdProductCodeId", "ProcessingId"]

# Written under these names while the chunks append; finish() gives them EMIS's names.
TABLES = {
    "Admin_Patient": PATIENT,
    "CareRecord_Observation": OBSERVATION,
    "Prescribing_IssueRecord": ISSUE_RECORD,
    "Coding_ClinicalCode": CLINICAL_CODE,
    "Coding_DrugCode": DRUG_CODE,
}


def guid(*parts: object) -> str:
    """A GUID in braces, upper case, fixed by what it names."""
    return "{" + str(uuid.uuid5(_NS, "/".join(str(p) for p in parts))).upper() + "}"


def code_id(kind: str, code: str) -> str:
    """An EMIS CodeId: an integer with no meaning of its own, fixed by the concept it stands for."""
    return str(int(hashlib.sha256(f"{kind}:{code}".encode()).hexdigest()[:12], 16) % 10**11 + 10**6)


def file_name(table: str, extract: int) -> str:
    stamp = dt.date.fromordinal(extract).strftime("%Y%m%d") + "030000"
    return f"1_{table}_{stamp}_{AGREEMENT_GUID}.csv"


def _writer(buf: io.StringIO) -> csv.DictWriter:  # type: ignore[type-arg]
    return csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")  # type: ignore[return-value]


def _header(cols: list[str]) -> bytes:
    buf = io.StringIO()
    _writer(buf).writerow(cols)
    return buf.getvalue().encode("utf-8")


@shape
class EmisShape(Shape):
    name = "emis"

    def __init__(self, extract: int) -> None:
        super().__init__(extract)
        self.bufs = {t: io.StringIO() for t in TABLES}
        self.w = {t: _writer(b) for t, b in self.bufs.items()}
        self.seen: set[str] = set()

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        return {f"{t}.part": _header(cols) for t, cols in TABLES.items()}

    def _clinical(self, code: Code) -> str:
        twin = snomed_twin(code)
        cid = code_id("clinical", twin.code + ("/" + code.code if code.system == "readv2" else ""))
        if cid not in self.seen:
            self.seen.add(cid)
            read = code.code + "00" if code.system == "readv2" and len(code.code) == 5 else ""
            self.w["Coding_ClinicalCode"].writerow(
                [cid, twin.term, read, twin.code, "", "", "", "", "Clinical Code", "1", ""]
            )
        return cid

    def _drug(self, code: Code) -> str:
        cid = code_id("drug", code.code)
        if cid not in self.seen:
            self.seen.add(cid)
            self.w["Coding_DrugCode"].writerow([cid, code.term, code.code, "1"])
        return cid

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        pg = emis_guid(person.id)
        org = guid("org", practice.ods)
        gp = guid("user", person.gp.id)
        left = person.dereg if person.dereg is not None else (person.death if person.death_coded else None)
        dead = person.death_coded and person.death is not None
        self.w["Admin_Patient"].writerow(
            [
                pg, org, gp, "F" if person.sex == "female" else "M", iso(person.birth),
                iso(person.death) if dead and person.death is not None else "",
                "", person.given, "", person.family, iso(person.reg_start), person.nhs_number,
                str(person.index + 1), "Regular", "false", "", person.address_line, "", person.town, "",
                person.postcode, "", "", "", "", guid("person", person.id),
                iso(left) if left is not None else "", "false", "false", "false", "", "", "", "", "", "", "1",
            ]
        )  # fmt: skip
        obs = self.w["CareRecord_Observation"]
        events = [("Problem", ev) for ev in rec.conditions] + [("Observation", ev) for ev in rec.observations]
        for i, (kind, ev) in enumerate(events):
            row = [
                guid("obs", person.id, i), pg, org, iso(ev.date), "YMD", iso(ev.date), "09:00:00", gp, gp,
                "", self._clinical(ev.code), "", "", "", "", "", kind, "", "", "", "false", "false", "1",
            ]  # fmt: skip
            obs.writerow(row)
            if i == 0 and person.index % 7 == 3:
                # Entered in error and deleted: EMIS sends the row again, flagged.
                later = iso(min(ev.date + 30, self.extract))
                obs.writerow(
                    [guid("obs-del", person.id), pg, org, later, "YMD", later, *row[6:20], "true", *row[21:]]
                )
        iss_w = self.w["Prescribing_IssueRecord"]
        for i, iss in enumerate(rec.issues):
            iss_w.writerow(
                [
                    guid("issue", person.id, i), pg, org, guid("drug", person.id, iss.course_id),
                    iso(iss.date), "YMD", iso(iss.date), "10:00:00", gp, gp, self._drug(iss.code), iss.dosage,
                    str(iss.quantity), iss.unit, "", "28", "", "false", "false", "1",
                ]
            )  # fmt: skip

    def bytes(self) -> dict[str, bytes]:
        return {f"{t}.part": b.getvalue().encode("utf-8") for t, b in self.bufs.items()}

    @classmethod
    def finish(cls, folder: Path, practices: list[Practice], extract: int) -> list[Path]:
        """Name the tables as EMIS does, keep one row a CodeId, and write the practices and GPs."""
        out = []
        for table in TABLES:
            part = folder / f"{table}.part"
            target = folder / file_name(table, extract)
            if table.startswith("Coding_"):
                with part.open(newline="", encoding="utf-8") as fh:
                    rows = list(csv.reader(fh))
                seen: set[str] = set()
                kept = [rows[0]] + [r for r in rows[1:] if not (r[0] in seen or seen.add(r[0]))]  # type: ignore[func-returns-value]
                buf = io.StringIO()
                _writer(buf).writerows(kept)
                target.write_bytes(buf.getvalue().encode("utf-8"))
                part.unlink()
            else:
                part.replace(target)
            out.append(target)
        opened = iso(extract - 365 * 30)
        org_buf, user_buf = io.StringIO(), io.StringIO()
        org_w, user_w = _writer(org_buf), _writer(user_buf)
        org_w.writerow(ORGANISATION)
        user_w.writerow(USER_IN_ROLE)
        for p in practices:
            org = guid("org", p.ods)
            org_w.writerow(
                [org, str(60000 + p.index), p.name, p.ods, "", "", "General Practice", opened, "",
                 guid("location", p.ods), "1"]
            )  # fmt: skip
            for gp in p.gps:
                user_w.writerow(
                    [guid("user", gp.id), org, "Dr", gp.given, gp.family, "R0260",
                     "General Medical Practitioner", opened, "", "1"]
                )  # fmt: skip
        for table, buf in (("Admin_Organisation", org_buf), ("Admin_UserInRole", user_buf)):
            target = folder / file_name(table, extract)
            target.write_bytes(buf.getvalue().encode("utf-8"))
            out.append(target)
        return out
