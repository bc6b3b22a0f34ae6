"""OpenSAFELY-shaped tables (rules/mappings/opensafely_core.yaml): hand-written and synthetic.

The fixture (fixtures/opensafely/) is written from ehrQL's core schema
(opensafely-core/ehrql ehrql/tables/core.py): one CSV per table with the schema's column names,
integer patient_id, birth dates on the first of the month, practice_pseudo_id, ons_deaths. Every
id is made up.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recruit.errors import RecruitError

from .pseudo_support import (
    FIXTURES,
    Stored,
    assert_every_row_accounted,
    equivalence,
    events,
    load,
    medications,
    patients,
    quarantined,
)

EXTRACT = FIXTURES / "opensafely"
D = dt.date
TAKEN = D(2025, 6, 30)


def _month(y: int, m: int, last: int) -> tuple[dt.date, dt.date]:
    return D(y, m, 1), D(y, m, last)


def test_fixture_is_stored_as_the_tables_say(engine) -> None:  # type: ignore[no-untyped-def]
    summary = load(engine, [EXTRACT], "opensafely_core.yaml", extract_date=TAKEN)
    assert patients(engine) == {
        # two registrations: the one that began latest (practice 487) is used
        "1001": Stored("487", None, "female", _month(1980, 3, 31), (D(2010, 6, 1), None), None),
        "1002": Stored("487", None, "male", _month(1971, 11, 30), (D(1999, 9, 2), None), None),
        "1003": Stored(
            "487", None, "male", _month(1950, 7, 31), (D(1990, 5, 5), D(2024, 1, 11)), D(2024, 1, 11)
        ),
        "1004": Stored("487", None, "other", _month(1990, 2, 28), (D(2020, 10, 20), D(2023, 3, 31)), None),
    }
    assert events(engine) == {
        ("1001", D(2021, 5, 12), "snomedct", "82423001"),
        ("1001", D(2025, 2, 3), "snomedct", "73438004"),
        ("1003", D(2023, 6, 15), "snomedct", "1775521000006106"),
        ("1004", D(2022, 11, 20), "snomedct", "160903007"),
    }
    cocodamol = "10398311000001107"
    assert medications(engine) == {
        ("1001", D(2025, 4, 1), "dmd", cocodamol),
        ("1001", D(2025, 5, 1), "dmd", cocodamol),
        ("1001", D(2025, 6, 2), "dmd", cocodamol),
        ("1003", D(2023, 12, 1), "dmd", cocodamol),
    }
    assert quarantined(engine) == {
        ("clinical_events.csv", 4, "date"),  # 2024-02-31
        ("clinical_events.csv", 5, "snomedct_code"),  # fails the check digit
        ("clinical_events.csv", 6, "snomedct_code"),  # a Read code, not SNOMED CT
        ("clinical_events.csv", 7, "patient_id"),  # no such patient in patients.csv
        ("medications.csv", 5, "dmd_code"),  # fails the check digit
    }
    assert_every_row_accounted(
        engine,
        summary,
        EXTRACT,
        {
            "patients.csv": 4,
            "practice_registrations.csv": 5,
            "ons_deaths.csv": 1,
            "clinical_events.csv": 4,
            "medications.csv": 4,
        },
    )


def test_without_an_extract_date_the_load_asks_for_one(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    """No OpenSAFELY table says when the data was taken."""
    with pytest.raises(RecruitError, match="extract-date"):
        load(sqlite_engine, [EXTRACT], "opensafely_core.yaml")
    assert patients(sqlite_engine) == {}


@pytest.mark.slow
def test_the_synthetic_population_finds_the_same_people_as_its_fhir_form(tmp_path: Path) -> None:
    """Birth dates known to the month: people whose 18th or 65th birthday could fall either side
    of the index date within that month are left out at the age step; nothing else differs."""
    equivalence(tmp_path, "opensafely", "opensafely_core.yaml", precision="month")
