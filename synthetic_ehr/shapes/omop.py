"""OMOP Common Data Model 5.4 tables, one CSV file per table under DIR/omop/.

person, observation_period, condition_occurrence, drug_exposure, observation, death (and
care_site, written once). person_id is keys.pseudonym(person.index); care_site_id a made-up
integer per practice (101, 102, ...), not its ODS code. Conditions go to condition_occurrence,
the FHIR form's Observations (work status, fit notes, benefits, opt-outs) to observation.

There is no OMOP vocabulary here: every *_concept_id is 0 ("No matching concept") and the code
the practice recorded is in *_source_value: SNOMED CT for clinical entries (entries the FHIR form
shows in Read v2 or CTV3 are written as the SNOMED CT concept of the same codelists and
categories: its twin, shapes/_crossmap.py) and dm+d in drug_source_value (real UK conversions map drugs
to RxNorm Extension concepts in drug_concept_id, so dm+d survives only in the source value).
Type concepts are 32817 (EHR). observation_period_end_date is never empty (the CDM requires it):
the day the person left or died, else the extract date.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from ..keys import pseudonym
from ..people import Person, Practice
from ..record import Record
from ..util import iso
from . import Shape, shape
from ._crossmap import snomed_twin

EHR = "32817"  # Type Concept: EHR
GENDER = {"male": "8507", "female": "8532"}

TABLES = {
    "person.csv": [
        "person_id",
        "gender_concept_id",
        "year_of_birth",
        "month_of_birth",
        "day_of_birth",
        "birth_datetime",
        "race_concept_id",
        "ethnicity_concept_id",
        "location_id",
        "provider_id",
        "care_site_id",
        "person_source_value",
        "gender_source_value",
        "gender_source_concept_id",
        "race_source_value",
        "race_source_concept_id",
        "ethnicity_source_value",
        "ethnicity_source_concept_id",
    ],
    "observation_period.csv": [
        "observation_period_id",
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
        "period_type_concept_id",
    ],
    "condition_occurrence.csv": [
        "condition_occurrence_id",
        "person_id",
        "condition_concept_id",
        "condition_start_date",
        "condition_start_datetime",
        "condition_end_date",
        "condition_end_datetime",
        "condition_type_concept_id",
        "condition_status_concept_id",
        "stop_reason",
        "provider_id",
        "visit_occurrence_id",
        "visit_detail_id",
        "condition_source_value",
        "condition_source_concept_id",
        "condition_status_source_value",
    ],
    "drug_exposure.csv": [
        "drug_exposure_id",
        "person_id",
        "drug_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_start_datetime",
        "drug_exposure_end_date",
        "drug_exposure_end_datetime",
        "verbatim_end_date",
        "drug_type_concept_id",
        "stop_reason",
        "refills",
        "quantity",
        "days_supply",
        "sig",
        "route_concept_id",
        "lot_number",
        "provider_id",
        "visit_occurrence_id",
        "visit_detail_id",
        "drug_source_value",
        "drug_source_concept_id",
        "route_source_value",
        "dose_unit_source_value",
    ],
    "observation.csv": [
        "observation_id",
        "person_id",
        "observation_concept_id",
        "observation_date",
        "observation_datetime",
        "observation_type_concept_id",
        "value_as_number",
        "value_as_string",
        "value_as_concept_id",
        "qualifier_concept_id",
        "unit_concept_id",
        "provider_id",
        "visit_occurrence_id",
        "visit_detail_id",
        "observation_source_value",
        "observation_source_concept_id",
        "unit_source_value",
        "qualifier_source_value",
        "value_source_value",
        "observation_event_id",
        "obs_event_field_concept_id",
    ],
    "death.csv": [
        "person_id",
        "death_date",
        "death_datetime",
        "death_type_concept_id",
        "cause_concept_id",
        "cause_source_value",
        "cause_source_concept_id",
    ],
}
CARE_SITE = [
    "care_site_id",
    "care_site_name",
    "place_of_service_concept_id",
    "location_id",
    "care_site_source_value",
    "place_of_service_source_value",
]


def care_site_id(practice: Practice) -> str:
    return str(101 + practice.index)


def _row(columns: list[str], values: dict[str, str]) -> list[str]:
    unknown = set(values) - set(columns)
    assert not unknown, unknown
    return [values.get(c, "") for c in columns]


@shape
class Omop(Shape):
    name = "omop"

    def __init__(self, extract: int) -> None:
        super().__init__(extract)
        self.bufs = {rel: io.StringIO() for rel in TABLES}
        self.out = {rel: csv.writer(buf, lineterminator="\n") for rel, buf in self.bufs.items()}

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        return {rel: (",".join(cols) + "\n").encode() for rel, cols in TABLES.items()}

    def _write(self, rel: str, **values: str) -> None:
        self.out[rel].writerow(_row(TABLES[rel], values))

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        pid = str(pseudonym(person.index))
        birth = dt.date.fromordinal(person.birth)
        death = person.death if person.death_coded else None
        left = person.dereg if person.dereg is not None else death
        zero = "0"
        self._write(
            "person.csv",
            person_id=pid,
            gender_concept_id=GENDER[person.sex],
            year_of_birth=str(birth.year),
            month_of_birth=str(birth.month),
            day_of_birth=str(birth.day),
            birth_datetime=f"{birth.isoformat()} 00:00:00",
            race_concept_id=zero,
            ethnicity_concept_id=zero,
            provider_id=person.gp.id.rsplit("gp", 1)[1],
            care_site_id=care_site_id(practice),
            gender_source_value=person.sex,
        )
        self._write(
            "observation_period.csv",
            observation_period_id=pid,
            person_id=pid,
            observation_period_start_date=iso(person.reg_start),
            observation_period_end_date=iso(left if left is not None else self.extract),
            period_type_concept_id=EHR,
        )
        if death is not None:
            self._write("death.csv", person_id=pid, death_date=iso(death), death_type_concept_id=EHR)
        for i, ev in enumerate(rec.conditions):
            self._write(
                "condition_occurrence.csv",
                condition_occurrence_id=f"{pid}{i:05d}",
                person_id=pid,
                condition_concept_id=zero,
                condition_start_date=iso(ev.date),
                condition_type_concept_id=EHR,
                condition_source_value=snomed_twin(ev.code).code,
                condition_source_concept_id=zero,
            )
        for i, ev in enumerate(rec.observations):
            self._write(
                "observation.csv",
                observation_id=f"{pid}{i:05d}",
                person_id=pid,
                observation_concept_id=zero,
                observation_date=iso(ev.date),
                observation_type_concept_id=EHR,
                observation_source_value=snomed_twin(ev.code).code,
                observation_source_concept_id=zero,
            )
        for i, iss in enumerate(rec.issues):
            self._write(
                "drug_exposure.csv",
                drug_exposure_id=f"{pid}{i:05d}",
                person_id=pid,
                drug_concept_id=zero,
                drug_exposure_start_date=iso(iss.date),
                drug_exposure_end_date=iso(iss.date + 27),
                drug_type_concept_id=EHR,
                quantity=str(iss.quantity),
                days_supply="28",
                sig=iss.dosage,
                drug_source_value=iss.code.code,
                drug_source_concept_id=zero,
            )

    def bytes(self) -> dict[str, bytes]:
        return {rel: buf.getvalue().encode("utf-8") for rel, buf in self.bufs.items()}

    @classmethod
    def finish(cls, folder: Path, practices: list[Practice], extract: int) -> list[Path]:
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(CARE_SITE)
        for p in practices:
            out.writerow(_row(CARE_SITE, {"care_site_id": care_site_id(p), "care_site_name": p.name}))
        path = folder / "care_site.csv"
        path.write_text(buf.getvalue(), encoding="utf-8")
        return [path]
