"""The comparison's population query, shared by both variants, which differ only in how a clinical
event's code is matched against a codelist. Index date 2026-11-01; windows end on the index date
and include both ends, as recruit's do."""

import csv
from collections.abc import Callable
from datetime import date
from pathlib import Path

from ehrql import create_dataset, months
from ehrql.tables.core import medications, patients, practice_registrations

CODELISTS = Path(__file__).resolve().parents[2] / "rules" / "codelists"  # recruit's own lists
INDEX_DATE = date(2026, 11, 1)


def codes_by_system(name: str) -> dict[str, list[str]]:
    """A recruit codelist CSV's codes, by coding system (exact match)."""
    out: dict[str, set[str]] = {}
    with open(CODELISTS / f"{name}.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["system"], set()).add(row["code"])
    return {system: sorted(codes) for system, codes in out.items()}


def population_dataset(clinical_events, in_codelist: Callable):
    """Registered, alive and 18-64 on the index date; a chronic-pain code ever; at least 3 opioid
    issues in the last 12 months; no employment-status code in the last 2 years.
    in_codelist(events, name): whether an event's code is in the named codelist."""
    age = patients.age_on(INDEX_DATE)
    events_to_index = clinical_events.where(clinical_events.date.is_on_or_before(INDEX_DATE))
    has_chronic_pain = events_to_index.where(
        in_codelist(clinical_events, "chronic_pain")
    ).exists_for_patient()
    has_employment_status_2y = (
        events_to_index.where(clinical_events.date.is_on_or_after(INDEX_DATE - months(24)))
        .where(in_codelist(clinical_events, "employment_status"))
        .exists_for_patient()
    )
    opioid_issues_12m = medications.where(
        medications.dmd_code.is_in(codes_by_system("opioids")["dmd"])
        & medications.date.is_on_or_between(INDEX_DATE - months(12), INDEX_DATE)
    ).count_for_patient()
    dataset = create_dataset()
    dataset.define_population(
        practice_registrations.exists_for_patient_on(INDEX_DATE)
        & patients.is_alive_on(INDEX_DATE)
        & (age >= 18)
        & (age <= 64)
        & has_chronic_pain
        & (opioid_issues_12m >= 3)
        & ~has_employment_status_2y
    )
    dataset.sex = patients.sex
    dataset.age = age
    return dataset
