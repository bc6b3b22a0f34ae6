"""CPRD Aurum (rules/mappings/cprd_aurum.yaml): a hand-written extract and the synthetic one.

The fixture (fixtures/cprd_aurum/) is written from the column lists of the CPRD Aurum Data
Specification v2.9: tab-separated, dd/mm/yyyy, NA, year of birth (month for a child), tables split
over numbered files; every id is made up. CPRD's dictionaries are licensed, so the fixture's
(fixtures/cprd_aurum_dictionaries/) hold five made-up medcodeids and two prodcodeids, given
beside the extract as a user gives the real ones.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
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

EXTRACT = FIXTURES / "cprd_aurum"
DICTIONARIES = FIXTURES / "cprd_aurum_dictionaries"
MEDICAL = DICTIONARIES / "EMISMedicalDictionary.txt"
PRODUCT = DICTIONARIES / "EMISProductDictionary.txt"
D = dt.date


def _year(y: int) -> tuple[dt.date, dt.date]:
    return D(y, 1, 1), D(y, 12, 31)


def test_fixture_is_stored_as_the_extract_says(engine) -> None:  # type: ignore[no-untyped-def]
    summary = load(engine, [EXTRACT, MEDICAL, PRODUCT], "cprd_aurum.yaml")
    # When it was taken: the Practice table's last collection date.
    assert summary.extract_date == D(2025, 6, 30)
    assert patients(engine) == {
        "4410220527": Stored("20527", None, "female", _year(1980), (D(2006, 3, 14), None), None),
        "5530120527": Stored("20527", None, "male", _year(1971), (D(1999, 9, 2), None), None),
        # a child: CPRD gives the month of birth too
        "6620920527": Stored(
            "20527", None, "female", (D(2015, 6, 1), D(2015, 6, 30)), (D(2015, 7, 1), None), None
        ),
        # died: emis_ddate 11 Jan, cprd_ddate 12 Jan: the earlier of the two is kept
        "7712020527": Stored(
            "20527", None, "male", _year(1950), (D(1990, 5, 5), D(2024, 1, 11)), D(2024, 1, 11)
        ),
        # gender 3 (indeterminate); acceptable = 0 is a research-quality mark, not a reason to leave out
        "8810420527": Stored("20527", None, "other", _year(1990), (D(2020, 10, 20), D(2023, 3, 31)), None),
    }
    assert events(engine) == {
        # medcodeid 700000000101: the dictionary gives Read v2 (1M52.00) and SNOMED CT
        ("4410220527", D(2021, 5, 12), "readv2", "1M52."),
        ("4410220527", D(2021, 5, 12), "snomedct", "82423001"),
        ("4410220527", D(2025, 2, 3), "snomedct", "73438004"),
        ("7712020527", D(2023, 6, 15), "snomedct", "1775521000006106"),  # from Observation_002
        ("8810420527", D(2022, 11, 20), "snomedct", "160903007"),
    }
    cocodamol = "10398311000001107"
    assert medications(engine) == {
        ("4410220527", D(2025, 4, 1), "dmd", cocodamol),
        ("4410220527", D(2025, 5, 1), "dmd", cocodamol),
        ("4410220527", D(2025, 6, 2), "dmd", cocodamol),
        ("7712020527", D(2023, 12, 1), "dmd", cocodamol),  # from DrugIssue_002
    }
    assert quarantined(engine) == {
        ("pilot_Extract_Observation_001.txt", 4, "obsdate"),  # 31/02/2024
        ("pilot_Extract_Observation_001.txt", 5, "medcodeid"),  # not in the medical dictionary
        ("pilot_Extract_Observation_001.txt", 6, "medcodeid"),  # its SNOMED CT id fails the check digit
        ("pilot_Extract_Observation_001.txt", 7, "obsdate"),  # NA: no date
        ("pilot_Extract_Observation_002.txt", 3, "patid"),  # no such patient in Patient
        ("pilot_Extract_DrugIssue_001.txt", 5, "prodcodeid"),  # not in the product dictionary
        ("pilot_Extract_DrugIssue_002.txt", 2, "prodcodeid"),  # its dm+d id fails the check digit
    }
    assert_every_row_accounted(
        engine,
        summary,
        EXTRACT,
        {
            "pilot_Extract_Patient_001.txt": 3,
            "pilot_Extract_Patient_002.txt": 2,
            "pilot_Extract_Observation_001.txt": 2,
            "pilot_Extract_Observation_002.txt": 2,
            "pilot_Extract_DrugIssue_001.txt": 3,
            "pilot_Extract_DrugIssue_002.txt": 1,
        },
        delimiter="\t",
    )


@pytest.mark.parametrize("missing", ["medical", "product"])
def test_a_missing_dictionary_is_refused_saying_what_it_is(sqlite_engine, missing: str) -> None:  # type: ignore[no-untyped-def]
    given = [PRODUCT] if missing == "medical" else [MEDICAL]
    with pytest.raises(RecruitError) as err:
        load(sqlite_engine, [EXTRACT, *given], "cprd_aurum.yaml")
    message = str(err.value)
    assert f"CPRD's {missing} dictionary" in message
    assert "licensed CPRD Aurum data" in message and "nothing was loaded" in message
    assert patients(sqlite_engine) == {}


@pytest.mark.parametrize("parts", [1, 3])
def test_a_table_split_differently_stores_the_same(sqlite_engine, tmp_path: Path, parts: int) -> None:  # type: ignore[no-untyped-def]
    """However CPRD splits Observation over numbered files, every file is read."""
    folder = tmp_path / "extract"
    shutil.copytree(EXTRACT, folder)
    header = (folder / "pilot_Extract_Observation_001.txt").read_text().splitlines(keepends=True)[0]
    rows = [
        line
        for name in ("pilot_Extract_Observation_001.txt", "pilot_Extract_Observation_002.txt")
        for line in (folder / name).read_text().splitlines(keepends=True)[1:]
    ]
    for name in ("pilot_Extract_Observation_001.txt", "pilot_Extract_Observation_002.txt"):
        (folder / name).unlink()
    for p in range(parts):
        (folder / f"pilot_Extract_Observation_{p + 1:03d}.txt").write_text(header + "".join(rows[p::parts]))
    load(sqlite_engine, [folder, MEDICAL, PRODUCT], "cprd_aurum.yaml")
    assert len(events(sqlite_engine)) == 5
    assert len([q for q in quarantined(sqlite_engine) if "Observation" in q[0]]) == 5


@pytest.mark.slow
def test_the_synthetic_population_finds_the_same_people_as_its_fhir_form(tmp_path: Path) -> None:
    """Year-only birth dates: people whose age on the index date the year cannot tell (near 18
    or 65) are left out at the age step; nothing else differs."""
    stats = equivalence(
        tmp_path,
        "cprd_aurum",
        "cprd_aurum.yaml",
        precision="cprd",
        extra=("dictionaries/EMISMedicalDictionary.txt", "dictionaries/EMISProductDictionary.txt"),
    )
    assert stats["candidates"] > 0  # the comparison reaches every step


def _iso(uk: str) -> str | None:
    return None if uk == "NA" else dt.datetime.strptime(uk, "%d/%m/%Y").date().isoformat()


def test_writer_writes_what_the_fhir_form_says(tmp_path: Path) -> None:
    generate(tmp_path, patients=150, practices=2, seed=5, formats=("ndjson", "cprd_aurum"), workers=1)
    extract = dt.date.fromisoformat(
        json.loads((tmp_path / "fhir" / "manifest.json").read_text())["transactionTime"][:10]
    )
    people = fhir_people(tmp_path)
    folder = tmp_path / "cprd_aurum"
    dictionaries = folder / "dictionaries"
    medical = {r["MedCodeId"]: r for r in read_table(dictionaries / "EMISMedicalDictionary.txt", "\t")}
    product = {r["ProdCodeId"]: r for r in read_table(dictionaries / "EMISProductDictionary.txt", "\t")}
    assert all("synthetic" in r["Release"] for r in [*medical.values(), *product.values()])
    rows = {r["patid"]: r for r in read_table(folder / "Synthetic_Extract_Patient_001.txt", "\t")}
    assert set(rows) == set(people)
    assert {r["pracid"] for r in rows.values()} == {"20001", "20002"}
    practice = read_table(folder / "Synthetic_Extract_Practice_001.txt", "\t")
    assert [_iso(r["lcd"]) for r in practice] == [extract.isoformat()] * 2
    coded: dict[str, Counter[tuple[str, str, str]]] = {}
    for part in ("001", "002"):
        table = read_table(folder / f"Synthetic_Extract_Observation_{part}.txt", "\t")
        assert table, "both numbered files hold rows"
        for r in table:
            entry = medical[r["medcodeid"]]
            coded.setdefault(r["patid"], Counter())[
                (_iso(r["obsdate"]), entry["SnomedCTConceptId"], entry["CleansedReadCode"])
            ] += 1
    issued: dict[str, Counter[tuple[str, str]]] = {}
    for part in ("001", "002"):
        for r in read_table(folder / f"Synthetic_Extract_DrugIssue_{part}.txt", "\t"):
            dmd = product[r["prodcodeid"]]["DMDID"]
            issued.setdefault(r["patid"], Counter())[(_iso(r["issuedate"]), dmd)] += 1
    for key, p in people.items():
        row = rows[key]
        assert row["yob"] == str(p.birth.year)
        age = extract.year - p.birth.year - ((extract.month, extract.day) < (p.birth.month, p.birth.day))
        child = age < 16
        assert row["mob"] == (str(p.birth.month) if child else "NA")
        assert row["gender"] == {"male": "1", "female": "2"}[p.sex]
        assert (_iso(row["regstartdate"]), _iso(row["regenddate"])) == p.registration
        assert _iso(row["cprd_ddate"]) == p.death
        want = Counter()
        for (day, system, code), n in p.events.items():
            read = f"{code}00" if system == "readv2" else ""
            want[(day, snomed_twin(Code(code, system, "")).code, read)] += n
        assert coded.get(key, Counter()) == want
        assert issued.get(key, Counter()) == p.medications


def test_the_readme_command_loads_cprd_without_naming_a_format(tmp_path: Path) -> None:
    """`recruit load EXTRACT Dictionary.txt ... --mapping cprd_aurum.yaml`: .txt files, no --format."""
    from tests.helpers import run_cli

    db = tmp_path / "c.db"
    result = run_cli(
        "load",
        "--create",
        str(EXTRACT),
        str(MEDICAL),
        str(PRODUCT),
        "--mapping",
        "cprd_aurum.yaml",
        "--db",
        str(db),
        cwd=Path(__file__).parents[4] / "rules" / "mappings",
    )
    assert result.returncode == 0, result.stderr
    assert "pseudonymised" in result.stdout.lower()
