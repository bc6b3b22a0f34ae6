"""OMOP CDM 5.4 tables (rules/mappings/omop_cdm54.yaml): hand-written and synthetic.

The fixture (fixtures/omop/) is written from the OMOP CDM v5.4 table definitions (OHDSI
CommonDataModel): person, observation_period, condition_occurrence, observation, drug_exposure,
death as CSV with the CDM's column names. Concept ids are 0; the codes are in *_source_value
(SNOMED CT; dm+d in drug_source_value). Every id is made up.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

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

EXTRACT = FIXTURES / "omop"
D = dt.date
TAKEN = D(2025, 6, 30)


def test_fixture_is_stored_as_the_tables_say(engine) -> None:  # type: ignore[no-untyped-def]
    summary = load(engine, [EXTRACT], "omop_cdm54.yaml", extract_date=TAKEN)
    assert patients(engine) == {
        # two observation periods: the latest is the registration; it ends on the data's date
        "1": Stored("6021", None, "female", (D(1980, 3, 14), None), (D(2010, 6, 1), TAKEN), None),
        "2": Stored("6021", None, "male", (D(1971, 11, 2), None), (D(1999, 9, 2), TAKEN), None),
        "3": Stored(
            "6021", None, "male", (D(1950, 7, 9), None), (D(1990, 5, 5), D(2024, 1, 11)), D(2024, 1, 11)
        ),
        "4": Stored("6021", None, "unknown", (D(1990, 2, 15), None), (D(2020, 10, 20), D(2023, 3, 31)), None),
    }
    assert events(engine) == {
        ("1", D(2021, 5, 12), "snomedct", "82423001"),  # condition_occurrence
        ("3", D(2023, 6, 15), "snomedct", "1775521000006106"),
        ("1", D(2025, 2, 3), "snomedct", "73438004"),  # observation
        ("4", D(2022, 11, 20), "snomedct", "160903007"),
    }
    cocodamol = "10398311000001107"  # drug_source_value; drug_concept_id would be RxNorm Extension
    assert medications(engine) == {
        ("1", D(2025, 4, 1), "dmd", cocodamol),
        ("1", D(2025, 5, 1), "dmd", cocodamol),
        ("1", D(2025, 6, 2), "dmd", cocodamol),
        ("3", D(2023, 12, 1), "dmd", cocodamol),
    }
    assert quarantined(engine) == {
        ("condition_occurrence.csv", 3, "condition_start_date"),  # 2024-02-31
        ("condition_occurrence.csv", 4, "person_id"),  # no such person in person.csv
        ("observation.csv", 3, "observation_source_value"),  # fails the check digit
        ("drug_exposure.csv", 5, "drug_source_value"),  # fails the check digit
        ("drug_exposure.csv", 7, "drug_source_value"),  # a product name, not a dm+d id
    }
    assert_every_row_accounted(
        engine,
        summary,
        EXTRACT,
        {
            "person.csv": 4,
            "observation_period.csv": 4,
            "death.csv": 1,
            "condition_occurrence.csv": 2,
            "observation.csv": 2,
            "drug_exposure.csv": 4,
        },
        not_used={"observation_period.csv": 1},  # the earlier registration: the latest is used
    )


@pytest.mark.slow
def test_the_synthetic_population_finds_the_same_people_as_its_fhir_form(tmp_path: Path) -> None:
    """OMOP keeps the whole birth date: nothing differs."""
    stats = equivalence(tmp_path, "omop", "omop_cdm54.yaml", precision="day")
    assert stats["candidates"] > 0  # the comparison reaches every step


def test_writer_writes_what_the_fhir_form_says(tmp_path: Path) -> None:
    generate(tmp_path, patients=150, practices=2, seed=5, formats=("ndjson", "omop"), workers=1)
    extract = json.loads((tmp_path / "fhir" / "manifest.json").read_text())["transactionTime"][:10]
    people = fhir_people(tmp_path)
    folder = tmp_path / "omop"
    rows = {r["person_id"]: r for r in read_table(folder / "person.csv")}
    periods = {r["person_id"]: r for r in read_table(folder / "observation_period.csv")}
    deaths = {r["person_id"]: r["death_date"] for r in read_table(folder / "death.csv")}
    coded: dict[str, Counter[tuple[str, str, str]]] = {}
    for table, prefix in (("condition_occurrence", "condition"), ("observation", "observation")):
        for r in read_table(folder / f"{table}.csv"):
            assert r[f"{prefix}_concept_id"] == "0"
            day = r[f"{prefix}_start_date" if prefix == "condition" else "observation_date"]
            coded.setdefault(r["person_id"], Counter())[(day, "snomedct", r[f"{prefix}_source_value"])] += 1
    issued: dict[str, Counter[tuple[str, str]]] = {}
    for r in read_table(folder / "drug_exposure.csv"):
        entry = (r["drug_exposure_start_date"], r["drug_source_value"])
        issued.setdefault(r["person_id"], Counter())[entry] += 1
    assert set(rows) == set(people)
    assert {r["care_site_id"] for r in rows.values()} == {"101", "102"}
    for key, p in people.items():
        row = rows[key]
        assert row["birth_datetime"] == f"{p.birth.isoformat()} 00:00:00"
        assert (row["year_of_birth"], row["month_of_birth"], row["day_of_birth"]) == tuple(
            str(x) for x in (p.birth.year, p.birth.month, p.birth.day)
        )
        assert row["gender_concept_id"] == {"male": "8507", "female": "8532"}[p.sex]
        period = periods[key]
        # the CDM requires an end: the day they left or died, else the extract date
        assert period["observation_period_start_date"] == p.registration[0]
        assert period["observation_period_end_date"] == (p.registration[1] or extract)
        assert deaths.get(key) == p.death
        want = Counter()
        for (day, system, code), n in p.events.items():
            want[(day, "snomedct", snomed_twin(Code(code, system, "")).code)] += n
        assert coded.get(key, Counter()) == want
        assert issued.get(key, Counter()) == p.medications
