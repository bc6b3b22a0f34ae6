# Variant B of dataset_definition.py: identical population, but clinical codes are
# matched per coding system (snomedct, readv2, ctv3) as recruit does. ehrQL's
# core/tpp schemas cannot hold Read v2 (and core holds SNOMED CT only), so this
# uses a user-defined ehrQL table (recruit_ehrql_tables.py) over the same rows.
import csv
from datetime import date
from functools import reduce
from operator import or_
from pathlib import Path

from ehrql import create_dataset, months
from ehrql.tables.core import medications, patients, practice_registrations
from recruit_ehrql_tables import clinical_events

CODELISTS = Path(__file__).resolve().parents[2] / "rules" / "codelists"  # recruit's own lists


def codes_by_system(name):
    out = {}
    with open(CODELISTS / f"{name}.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["system"], set()).add(row["code"])
    return {system: sorted(c) for system, c in out.items()}


def in_codelist(events, name):
    return reduce(
        or_,
        [
            (events.code_system == system) & events.code.is_in(codes)
            for system, codes in sorted(codes_by_system(name).items())
        ],
    )


opioids = codes_by_system("opioids")["dmd"]

index_date = date(2026, 11, 1)

age = patients.age_on(index_date)

events_to_index = clinical_events.where(clinical_events.date.is_on_or_before(index_date))
has_chronic_pain = events_to_index.where(in_codelist(clinical_events, "chronic_pain")).exists_for_patient()
has_employment_status_2y = (
    events_to_index.where(clinical_events.date.is_on_or_after(index_date - months(24)))
    .where(in_codelist(clinical_events, "employment_status"))
    .exists_for_patient()
)

opioid_issues_12m = medications.where(
    medications.dmd_code.is_in(opioids)
    & medications.date.is_on_or_between(index_date - months(12), index_date)
).count_for_patient()

dataset = create_dataset()
dataset.define_population(
    practice_registrations.exists_for_patient_on(index_date)
    & patients.is_alive_on(index_date)
    & (age >= 18)
    & (age <= 64)
    & has_chronic_pain
    & (opioid_issues_12m >= 3)
    & ~has_employment_status_2y
)
dataset.sex = patients.sex
dataset.age = age
