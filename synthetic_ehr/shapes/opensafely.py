"""OpenSAFELY-shaped tables: ehrQL's core schema (opensafely-core/ehrql ehrql/tables/core.py).

One CSV file per table under DIR/opensafely/ (patients, practice_registrations, clinical_events,
medications, ons_deaths), a header row of the schema's column names, ISO dates. patient_id is
keys.pseudonym(person.index); practice_pseudo_id a made-up integer per practice (101, 102, ...),
not its ODS code. The birth date is rounded to the first of its month, as the schema requires.

clinical_events holds SNOMED CT only: entries the FHIR form shows in Read v2 or CTV3 are written
as the SNOMED CT concept of the same codelists and categories (its twin: shapes/_crossmap.py).
ons_deaths holds the coded deaths from February 2019 (when ONS data in OpenSAFELY begins); a
death the practice never coded is in neither table, as in the FHIR form.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

from ..keys import pseudonym
from ..people import Person, Practice
from ..record import Record
from ..util import iso
from . import Shape, shape
from ._crossmap import snomed_twin

TABLES = {
    "patients.csv": ["patient_id", "date_of_birth", "sex", "date_of_death"],
    "practice_registrations.csv": ["patient_id", "start_date", "end_date", "practice_pseudo_id"],
    "clinical_events.csv": ["patient_id", "date", "snomedct_code", "numeric_value"],
    "medications.csv": ["patient_id", "date", "dmd_code"],
    "ons_deaths.csv": ["patient_id", "date", "underlying_cause_of_death"]
    + [f"cause_of_death_{i:02d}" for i in range(1, 16)],
}
ONS_FROM = dt.date(2019, 2, 1).toordinal()


def practice_pseudo_id(practice: Practice) -> str:
    return str(101 + practice.index)


def _header(columns: list[str]) -> bytes:
    return (",".join(columns) + "\r\n").encode()


@shape
class OpenSafely(Shape):
    name = "opensafely"

    def __init__(self, extract: int) -> None:
        super().__init__(extract)
        self.bufs = {rel: io.StringIO() for rel in TABLES}
        self.out = {rel: csv.writer(buf, lineterminator="\r\n") for rel, buf in self.bufs.items()}

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        return {rel: _header(cols) for rel, cols in TABLES.items()}

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        pid = str(pseudonym(person.index))
        birth = dt.date.fromordinal(person.birth).replace(day=1)
        death = person.death if person.death_coded else None
        left = person.dereg if person.dereg is not None else death
        self.out["patients.csv"].writerow(
            [pid, birth.isoformat(), person.sex, iso(death) if death is not None else ""]
        )
        self.out["practice_registrations.csv"].writerow(
            [pid, iso(person.reg_start), iso(left) if left is not None else "", practice_pseudo_id(practice)]
        )
        if death is not None and death >= ONS_FROM:
            self.out["ons_deaths.csv"].writerow([pid, iso(death)] + [""] * 16)
        events = self.out["clinical_events.csv"]
        for ev in [*rec.conditions, *rec.observations]:
            events.writerow([pid, iso(ev.date), snomed_twin(ev.code).code, ""])
        meds = self.out["medications.csv"]
        for iss in rec.issues:
            meds.writerow([pid, iso(iss.date), iss.code.code])

    def bytes(self) -> dict[str, bytes]:
        return {rel: buf.getvalue().encode("utf-8") for rel, buf in self.bufs.items()}
