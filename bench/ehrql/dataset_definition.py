# Population query for the ehrQL vs recruit comparison (written for this test).
# Index date 2026-11-01. Windows end on the index date and include both ends.
import csv
from datetime import date
from pathlib import Path

from ehrql import create_dataset, months
from ehrql.tables.core import clinical_events, medications, patients, practice_registrations

CODELISTS = Path(__file__).resolve().parents[2] / "rules" / "codelists"  # recruit's own lists


def codes(name, system):
    """Codes of one coding system from a recruit codelist CSV (exact match)."""
    with open(CODELISTS / f"{name}.csv", newline="") as f:
        return sorted({row["code"] for row in csv.DictReader(f) if row["system"] == system})


# core.clinical_events only has snomedct_code, whose values ehrQL validates as SNOMED
# CT, so only the snomedct rows of the two clinical codelists can be used.
chronic_pain = codes("chronic_pain", "snomedct")
employment_status = codes("employment_status", "snomedct")
opioids = codes("opioids", "dmd")

index_date = date(2026, 11, 1)

age = patients.age_on(index_date)

events_to_index = clinical_events.where(clinical_events.date.is_on_or_before(index_date))
has_chronic_pain = events_to_index.where(
    clinical_events.snomedct_code.is_in(chronic_pain)
).exists_for_patient()
has_employment_status_2y = (
    events_to_index.where(clinical_events.date.is_on_or_after(index_date - months(24)))
    .where(clinical_events.snomedct_code.is_in(employment_status))
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
