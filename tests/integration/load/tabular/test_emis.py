"""The EMIS extract (rules/mappings/emis_extract.yaml): a hand-written extract from the published
column lists, and a generated population that must search the same as its FHIR form."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

from synthetic_ehr.keys import emis_guid
from tests.integration.load.tabular.helpers import (
    FIXTURES,
    data_rows,
    equivalent_to_fhir,
    load_folder,
    quarantined,
    stored_events,
    stored_issues,
    stored_patients,
)

WHEN = dt.date(2025, 6, 1)
FOLDER = FIXTURES / "emis"
OBS1 = "1_CareRecord_Observation_20250601030000_5E0C2A7B-3D41-4F6A-8C9E-1B2D3F4A5C6D.csv"
ISSUES = "1_Prescribing_IssueRecord_20250601030000_5E0C2A7B-3D41-4F6A-8C9E-1B2D3F4A5C6D.csv"


def test_an_emis_extract_is_read_whole_and_its_codes_translated(engine):
    summary = load_folder(engine, FOLDER, "emis_extract.yaml", WHEN)
    rows = sum(
        data_rows(FOLDER, f"*_{t}_*.csv")
        for t in ("Admin_Patient", "CareRecord_Observation", "Prescribing_IssueRecord")
    )
    skipped = sum(summary.not_used.values())
    # Every row of every file a pattern matches (both Observation batches) is accounted for:
    # left out with its reason, or read; and every row read is stored or quarantined.
    assert summary.read + skipped == rows
    assert summary.read == summary.loaded + summary.quarantined
    for kind, counts in summary.by_kind.items():
        assert counts.read == counts.stored + counts.quarantined, kind
    assert (summary.by_kind["Event"].read, summary.by_kind["Event"].stored) == (6, 2)
    assert (summary.by_kind["Medication"].read, summary.by_kind["Medication"].stored) == (2, 1)
    assert dict(summary.not_used) == {
        "Patient row deleted in EMIS Web": 1,
        "Patient row a dummy patient (not a real person)": 1,
        "Event row deleted in EMIS Web (entered in error)": 1,
    }
    # The coding files are read as lookups (every row of them).
    assert sorted(Path(f).name.split("_")[2] for f in summary.lookups) == [
        "ClinicalCode", "DrugCode", "Organisation", "UserInRole"
    ]  # fmt: skip
    where = quarantined(engine)
    assert [(f, line) for f, line, _ in where] == sorted(
        [(OBS1, 3), (OBS1, 4), (OBS1, 5), (OBS1, 6), (ISSUES, 3)]
    )
    assert dict(((f, line), col) for f, line, col in where)[(OBS1, 3)] == "EffectiveDate"
    assert dict(((f, line), col) for f, line, col in where)[(OBS1, 4)] == "CodeId"
    assert dict(((f, line), col) for f, line, col in where)[(OBS1, 6)] == "PatientGuid"
    assert all(col for _, _, col in where)

    patients = stored_patients(engine)
    # Keys in braces, upper case, as EMIS writes them (real fixture keys below).
    assert set(patients) == {
        "{11111111-1111-4111-8111-111111111111}",
        "{22222222-2222-4222-8222-222222222222}",
        "{33333333-3333-4333-8333-333333333333}",
        "{44444444-4444-4444-8444-444444444444}",
    }
    first = patients["{11111111-1111-4111-8111-111111111111}"]
    assert first.nhs_number == "9991234578" and first.date_of_birth == dt.date(1975, 4, 12)
    assert first.sex == "female" and first.postcode == "ZZ99 1AA"
    assert first.address == "1 Example Street\nExampleton"
    assert patients["{44444444-4444-4444-8444-444444444444}"].sex == "unknown"
    assert patients["{22222222-2222-4222-8222-222222222222}"].registration_end == dt.date(2024, 3, 1)
    assert patients["{33333333-3333-4333-8333-333333333333}"].date_of_death == dt.date(2024, 12, 24)
    # CodeIds through Coding_ClinicalCode to SNOMED CT, and Coding_DrugCode to dm+d.
    assert stored_events(engine) == [
        ("{11111111-1111-4111-8111-111111111111}", "snomedct", "128200000", dt.date(2024, 10, 1)),
        ("{44444444-4444-4444-8444-444444444444}", "snomedct", "1727541000006109", dt.date(2025, 1, 15)),
    ]
    assert stored_issues(engine) == [
        ("{11111111-1111-4111-8111-111111111111}", "dmd", "10290811000001105", dt.date(2025, 5, 1))
    ]


def test_a_population_searches_the_same_from_the_emis_extract_as_from_fhir(tmp_path):
    compared = equivalent_to_fhir(
        tmp_path, "emis", "emis_extract.yaml", lambda _i, pid: emis_guid(pid), ("readv2", "ctv3")
    )
    compared.assert_same()


def test_the_emis_shape_names_files_as_emis_does_and_lists_each_code_id_once(tmp_path):
    from synthetic_ehr import generate
    from synthetic_ehr.params import Params

    small = Params().model_copy(update={"chunk_size": 17})
    generate(tmp_path / "a", patients=120, practices=2, seed=3, formats=("emis",), workers=1)
    generate(tmp_path / "b", patients=120, practices=2, seed=3, formats=("emis",), workers=1, params=small)
    a, b = sorted((tmp_path / "a" / "emis").iterdir()), sorted((tmp_path / "b" / "emis").iterdir())
    assert [p.name for p in a] == [p.name for p in b]
    assert all(
        x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True)
    )  # chunking changes nothing
    assert all(re.fullmatch(r"1_[A-Za-z]+_[A-Za-z]+_\d{14}_[0-9A-F-]{36}\.csv", p.name) for p in a)
    for table in ("Coding_ClinicalCode", "Coding_DrugCode"):
        (path,) = (p for p in a if f"_{table}_" in p.name)
        with path.open(newline="", encoding="utf-8") as fh:
            ids = [row["CodeId"] for row in csv.DictReader(fh)]
        assert ids and len(ids) == len(set(ids))


def test_a_legacy_code_carried_as_snomed_ct_never_gains_a_codelist_category():
    """EMIS (and the SRE for Read v2) write a Read v2/CTV3 entry as its SNOMED CT twin: the twin
    sits in exactly the code's codelist categories, or in fewer (never in another)."""
    from synthetic_ehr.codes import Code
    from synthetic_ehr.shapes._crossmap import _tables, exact_twin, snomed_twin

    member, _, _ = _tables()
    legacy = [(s, c) for s, c in member if s in ("readv2", "ctv3")]
    assert legacy
    for system, code in legacy:
        twin = snomed_twin(Code(code, system, ""))
        has = member.get(("snomedct", twin.code), frozenset())
        assert has <= member[(system, code)], (system, code)
        assert exact_twin(Code(code, system, "")) == (has == member[(system, code)]), (system, code)


def test_the_extract_date_is_read_from_the_emis_file_names(tmp_path):
    """The EMIS extract names each file with the time it was taken: no --extract-date needed."""
    from recruit.load.csv_extract import CsvSource
    from recruit.resources import rules_file

    source = CsvSource([FOLDER], rules_file("mappings/emis_extract.yaml"))
    when = source.extract_date()
    assert when is not None and source.date_source.startswith("the name of ")
    stamp = re.search(r"_(\d{8})\d{6}_", source.date_source)
    assert stamp is not None and when.strftime("%Y%m%d") == stamp.group(1)
