"""OpenSAFELY-shaped tables (rules/mappings/opensafely_core.yaml): hand-written and synthetic.

The fixture (fixtures/opensafely/) is written from ehrQL's core schema
(opensafely-core/ehrql ehrql/tables/core.py): one CSV per table with the schema's column names,
integer patient_id, birth dates on the first of the month, practice_pseudo_id, ons_deaths. Every
id is made up.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from recruit.errors import RecruitError
from synthetic_ehr import generate
from synthetic_ehr.codes import Code
from synthetic_ehr.shapes._crossmap import snomed_twin

from .pseudo_support import (
    FIXTURES,
    Stored,
    assert_every_row_accounted,
    equivalence,
    events,
    fhir_people,
    load,
    medications,
    patients,
    quarantined,
    read_table,
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
            "practice_registrations.csv": 4,
            "ons_deaths.csv": 1,
            "clinical_events.csv": 4,
            "medications.csv": 4,
        },
        not_used={"practice_registrations.csv": 1},  # the earlier registration: the latest is used
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
    stats = equivalence(tmp_path, "opensafely", "opensafely_core.yaml", precision="month")
    assert stats["candidates"] > 0  # the comparison reaches every step


def test_writer_writes_what_the_fhir_form_says(tmp_path: Path) -> None:
    generate(tmp_path, patients=150, practices=2, seed=5, formats=("ndjson", "opensafely"), workers=1)
    people = fhir_people(tmp_path)
    folder = tmp_path / "opensafely"
    rows = {r["patient_id"]: r for r in read_table(folder / "patients.csv")}
    registrations = {r["patient_id"]: r for r in read_table(folder / "practice_registrations.csv")}
    ons = {r["patient_id"]: r["date"] for r in read_table(folder / "ons_deaths.csv")}
    coded: dict[str, Counter[tuple[str, str, str]]] = {}
    for r in read_table(folder / "clinical_events.csv"):
        coded.setdefault(r["patient_id"], Counter())[(r["date"], "snomedct", r["snomedct_code"])] += 1
    issued: dict[str, Counter[tuple[str, str]]] = {}
    for r in read_table(folder / "medications.csv"):
        issued.setdefault(r["patient_id"], Counter())[(r["date"], r["dmd_code"])] += 1
    assert set(rows) == set(people)
    assert {r["practice_pseudo_id"] for r in registrations.values()} == {"101", "102"}
    assert any(system != "snomedct" for p in people.values() for _, system, _ in p.events)
    for key, p in people.items():
        row = rows[key]
        assert row["date_of_birth"] == p.birth.replace(day=1).isoformat()
        assert row["sex"] == p.sex
        assert (row["date_of_death"] or None) == p.death
        reg = registrations[key]
        assert (reg["start_date"], reg["end_date"] or None) == p.registration
        assert ons.get(key) == (p.death if p.death and p.death >= "2019-02-01" else None)
        want = Counter()
        for (day, system, code), n in p.events.items():
            want[(day, "snomedct", snomed_twin(Code(code, system, "")).code)] += n
        assert coded.get(key, Counter()) == want
        assert issued.get(key, Counter()) == p.medications
