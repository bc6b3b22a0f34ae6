"""A CSV extract shaped like a GP system's search-report export (see README.md).

Three files, one row per patient / coded entry / issue, joined on "NHS Number". Dates are
dd/mm/yyyy as UK clinical systems print them; every field is quoted.
"""

from __future__ import annotations

import csv
import io

from .codes import SYSTEM_URI
from .people import Person, Practice
from .record import Record
from .util import uk_date

SYSTEM_LABEL = {"snomedct": "SNOMED CT", "readv2": "Read v2", "ctv3": "CTV3", "dmd": "dm+d"}

PATIENT_HEADER = [
    "Practice Code",
    "NHS Number",
    "Surname",
    "Forename",
    "Sex",
    "Date of Birth",
    "Date of Death",
    "Address Line 1",
    "Town",
    "Postcode",
    "Registration Date",
    "Deregistration Date",
    "Usual GP",
]
EVENT_HEADER = ["NHS Number", "Date", "Code", "Code System", "Term", "Record Type"]
MEDICATION_HEADER = [
    "NHS Number",
    "Issue Date",
    "dm+d Code",
    "Drug",
    "Dosage",
    "Quantity",
    "Quantity Unit",
    "Issue Type",
    "Course ID",
]
HEADERS = {"patients": PATIENT_HEADER, "events": EVENT_HEADER, "medications": MEDICATION_HEADER}


def header_bytes(name: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow(HEADERS[name])
    return buf.getvalue().encode("utf-8")


def manifest_bytes(extract: int) -> bytes:
    """csv/manifest.csv: when the extract was taken (the mapping's extract_date names it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(["Extract Date"])
    writer.writerow([uk_date(extract)])
    return buf.getvalue().encode("utf-8")


class CsvChunk:
    """Accumulates rows for a chunk of patients; `.bytes()` gives each file's part."""

    def __init__(self) -> None:
        self.bufs = {k: io.StringIO() for k in HEADERS}
        self.writers = {
            k: csv.writer(b, quoting=csv.QUOTE_ALL, lineterminator="\r\n") for k, b in self.bufs.items()
        }

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        nhs = person.nhs_number
        left = person.dereg if person.dereg is not None else (person.death if person.death_coded else None)
        self.writers["patients"].writerow(
            [
                practice.ods,
                nhs,
                person.family.upper(),
                person.given,
                "Female" if person.sex == "female" else "Male",
                uk_date(person.birth),
                uk_date(person.death) if person.death_coded and person.death is not None else "",
                person.address_line,
                person.town,
                person.postcode,
                uk_date(person.reg_start),
                uk_date(left) if left is not None else "",
                f"Dr {person.gp.given[0]} {person.gp.family}",
            ]
        )
        ev_w = self.writers["events"]
        for kind, events in (("Condition", rec.conditions), ("Observation", rec.observations)):
            for ev in events:
                ev_w.writerow(
                    [nhs, uk_date(ev.date), ev.code.code, SYSTEM_LABEL[ev.code.system], ev.code.term, kind]
                )
        med_w = self.writers["medications"]
        for iss in rec.issues:
            med_w.writerow(
                [
                    nhs,
                    uk_date(iss.date),
                    iss.code.code,
                    iss.code.term,
                    iss.dosage,
                    iss.quantity,
                    iss.unit,
                    "Repeat" if iss.course == "continuous" else "Acute",
                    iss.course_id,
                ]
            )

    def bytes(self) -> dict[str, bytes]:
        return {f"csv/{k}.csv": b.getvalue().encode("utf-8") for k, b in self.bufs.items()}


assert set(SYSTEM_LABEL) >= set(SYSTEM_URI)
