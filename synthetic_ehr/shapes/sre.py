"""The SystmOne Strategic Reporting Extract (SRE), as TPP sends it to a data service.

Column lists follow the SRE schema classes of endeavourhealth/Transforms (tpp/csv/schema):
SRPatient, SRPatientRegistration and SRPatientAddressHistory as in extract version 89 (the
first with RemovedData on every table), SRCode and SRPrimaryCareMedication as in version 90
(SRCode with both CTV3Code and SNOMEDCode). Rows are keyed by IDPatient (an integer,
synthetic_ehr.keys.pseudonym); IDOrganisation columns hold the practice's ODS code. Every field
is quoted, text is Windows-1252, dates are `dd MMM yyyy HH:mm:ss`.

SystmOne codes in CTV3 and SNOMED CT: a CTV3 entry is written in CTV3Code, a SNOMED CT entry in
SNOMEDCode, and a Read v2 entry (SystmOne has none) as its SNOMED CT twin (shapes._crossmap).
Histories: some patients have an earlier registration elsewhere and an earlier address, so a
loader must pick the current one. Each practice has a test patient (TestPatient = Y), and some
rows are sent again as removed (RemovedData = 1, the other columns empty).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from ..keys import pseudonym
from ..people import Person, Practice
from ..record import Record
from . import Shape, shape
from ._crossmap import snomed_twin

ENCODING = "cp1252"

PATIENT = [
    "RowIdentifier", "IDOrganisationVisibleTo", "Title", "FirstName", "MiddleNames", "Surname",
    "PreviousSurname", "NHSNumber", "DateBirth", "DateDeath", "BirthPlace", "Gender", "SpeaksEnglish",
    "EmailAddress", "TestPatient", "SSRef", "SpineMatched", "RemovedData",
]  # fmt: skip
REGISTRATION = [
    "RowIdentifier", "IDOrganisationVisibleTo", "DateEventRecorded", "IDProfileEnteredBy",
    "DateRegistration", "DateDeRegistration", "RegistrationStatus", "PreferredPharmacy", "IDPatient",
    "IDOrganisation", "IDOrganisationRegisteredAt", "RemovedData",
]  # fmt: skip
ADDRESS = [
    "RowIdentifier", "IDOrganisationVisibleTo", "DateEventRecorded", "DateEvent", "IDProfileEnteredBy",
    "IDDoneBy", "TextualEventDoneBy", "IDOrganisationDoneAt", "NameOfBuilding", "NumberOfBuilding",
    "NameOfRoad", "NameOfLocality", "NameOfTown", "NameOfCounty", "FullPostCode", "DateTo",
    "AddressType", "IDEvent", "IDPatient", "IDOrganisation", "CcgOfResidence",
    "IDOrganisationRegisteredAt", "RemovedData",
]  # fmt: skip
CODE = [
    "RowIdentifier", "IDOrganisationVisibleTo", "DateEventRecorded", "DateEvent", "IDProfileEnteredBy",
    "IDDoneBy", "TextualEventDoneBy", "IDOrganisationDoneAt", "CTV3Code", "CTV3Text", "SNOMEDCode",
    "SNOMEDText", "NumericComparator", "IsNumeric", "NumericValue", "NumericUnit", "EpisodeType",
    "IDTemplate", "IDEvent", "IDPatient", "IDReferralIn", "IDAppointment", "IDVisit", "IDOrganisation",
    "IDOrganisationRegisteredAt", "RemovedData",
]  # fmt: skip
MEDICATION = [
    "RowIdentifier", "IDOrganisationVisibleTo", "DateEventRecorded", "DateEvent", "IDProfileEnteredBy",
    "IDDoneBy", "TextualEventDoneBy", "IDOrganisationDoneAt", "IDMultiLexProduct", "IDMultiLexPack",
    "IDMultiLexDMD", "NameOfMedication", "DateMedicationStart", "DateMedicationEnd", "MedicationDosage",
    "MedicationQuantity", "IsSupervised", "SupervisedDose", "UnsupervisedDose", "IsRepeatMedication",
    "IsOtherMedication", "IsDentalMedication", "IsHospitalMedication", "IDRepeatTemplate",
    "IDReferralIn", "IDEvent", "IDPatient", "IDOrganisation", "IDOrganisationRegisteredAt", "RemovedData",
]  # fmt: skip
FILES = {
    "SRPatient.csv": PATIENT,
    "SRPatientRegistration.csv": REGISTRATION,
    "SRPatientAddressHistory.csv": ADDRESS,
    "SRCode.csv": CODE,
    "SRPrimaryCareMedication.csv": MEDICATION,
}
ELSEWHERE = "ZZ9999"  # an earlier practice, not in this extract
TEST_PATIENT_BASE = 900_000_001


def sre_date(ordinal: int) -> str:
    """`dd MMM yyyy HH:mm:ss`, as the SRE writes every date."""
    return dt.date.fromordinal(ordinal).strftime("%d %b %Y") + " 00:00:00"


def _writer(buf: io.StringIO):  # type: ignore[no-untyped-def]
    return csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")


def _header(cols: list[str]) -> bytes:
    buf = io.StringIO()
    _writer(buf).writerow(cols)
    return buf.getvalue().encode(ENCODING)


def removed(cols: list[str], row_id: str, ods: str) -> list[str]:
    """A row TPP sends again once removed: its id, who sees it, and RemovedData = 1."""
    out = [""] * len(cols)
    out[0], out[1], out[-1] = row_id, ods, "1"
    return out


@shape
class SreShape(Shape):
    name = "sre"

    def __init__(self, extract: int) -> None:
        super().__init__(extract)
        self.bufs = {f: io.StringIO() for f in FILES}
        self.w = {f: _writer(b) for f, b in self.bufs.items()}

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        return {f: _header(cols) for f, cols in FILES.items()}

    @staticmethod
    def _address(
        pid: str,
        ods: str,
        n: str,
        start: int,
        number: str,
        road: str,
        town: str,
        postcode: str,
        end: int | None,
    ) -> list[str]:
        day = sre_date(start)
        return [
            f"{pid}{n}", ods, day, day, "", "", "", ods, "", number, road, "", town, "", postcode,
            sre_date(end) if end is not None else "", "Home", "", pid, ods, "", ods, "0",
        ]  # fmt: skip

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        pid = str(pseudonym(person.index))
        ods = practice.ods
        staff = f"{person.gp.id}"
        left = person.dereg if person.dereg is not None else (person.death if person.death_coded else None)
        dead = person.death_coded and person.death is not None
        self.w["SRPatient.csv"].writerow(
            [pid, ods, "", person.given, "", person.family, "", person.nhs_number, sre_date(person.birth),
             sre_date(person.death) if dead and person.death is not None else "", "",
             "F" if person.sex == "female" else "M", "Y", "", "N", "", "Y", "0"]
        )  # fmt: skip
        reg = self.w["SRPatientRegistration.csv"]
        if person.index % 5 == 1 and person.reg_start - person.birth > 400:
            start = person.birth + 200
            reg.writerow(
                [f"{pid}01", ELSEWHERE, sre_date(start), "", sre_date(start), sre_date(start + 100), "GMS",
                 "", pid, ELSEWHERE, ELSEWHERE, "0"]
            )  # fmt: skip
        reg.writerow(
            [f"{pid}02", ods, sre_date(person.reg_start), staff, sre_date(person.reg_start),
             sre_date(left) if left is not None else "", "GMS", "", pid, ods, ods, "0"]
        )  # fmt: skip
        addr = self.w["SRPatientAddressHistory.csv"]
        moved = person.reg_start - 30
        number, _, road = person.address_line.partition(" ")
        if person.index % 4 == 2:
            old_postcode = person.postcode[:-3] + "9ZZ" if len(person.postcode) > 4 else person.postcode
            addr.writerow(
                self._address(pid, ods, "01", moved - 3000, "1", "Old Road", person.town, old_postcode, moved)
            )
        addr.writerow(self._address(pid, ods, "02", moved, number, road, person.town, person.postcode, None))
        code_w = self.w["SRCode.csv"]
        for i, ev in enumerate([*rec.conditions, *rec.observations]):
            ctv3 = ctv3_text = snomed = snomed_text = ""
            if ev.code.system == "ctv3":
                ctv3, ctv3_text = ev.code.code, ev.code.term
            else:
                twin = snomed_twin(ev.code)
                snomed, snomed_text = twin.code, twin.term
            day = sre_date(ev.date)
            code_w.writerow(
                [f"{pid}{i:05d}", ods, day, day, staff, staff, "", ods, ctv3, ctv3_text, snomed, snomed_text,
                 "", "N", "", "", "", "", "", pid, "", "", "", ods, ods, "0"]
            )  # fmt: skip
        if person.index % 6 == 4:
            code_w.writerow(removed(CODE, f"{pid}99999", ods))
        med_w = self.w["SRPrimaryCareMedication.csv"]
        for i, iss in enumerate(rec.issues):
            day = sre_date(iss.date)
            med_w.writerow(
                [f"{pid}{i:05d}", ods, day, day, staff, staff, "", ods, "", "", iss.code.code, iss.code.term,
                 day, sre_date(iss.date + 28), iss.dosage, f"{iss.quantity} {iss.unit}", "N", "", "",
                 "Y" if iss.course == "continuous" else "N", "N", "N", "N",
                 iss.course_id if iss.course == "continuous" else "", "", "", pid, ods, ods, "0"]
            )  # fmt: skip

    def bytes(self) -> dict[str, bytes]:
        return {f: b.getvalue().encode(ENCODING, errors="replace") for f, b in self.bufs.items()}

    @classmethod
    def finish(cls, folder: Path, practices: list[Practice], extract: int) -> list[Path]:
        """A test patient in each practice (SystmOne's training records), to be left out."""
        buf = io.StringIO()
        w = _writer(buf)
        for p in practices:
            w.writerow(
                [str(TEST_PATIENT_BASE + p.index), p.ods, "", "Test", "", "Patient", "", "",
                 sre_date(extract - 365 * 40), "", "", "F", "Y", "", "Y", "", "N", "0"]
            )  # fmt: skip
        with (folder / "SRPatient.csv").open("ab") as fh:
            fh.write(buf.getvalue().encode(ENCODING))
        return []
