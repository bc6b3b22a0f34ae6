"""The SystmOne Strategic Reporting Extract (rules/mappings/tpp_sre.yaml): a hand-written extract
from the published column lists (cp1252, every field quoted, `dd MMM yyyy HH:mm:ss`), and a
generated population that must search the same as its FHIR form."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from synthetic_ehr.keys import pseudonym
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
FOLDER = FIXTURES / "sre"
TABLES = (
    "SRPatient",
    "SRPatientRegistration",
    "SRPatientAddressHistory",
    "SRCode",
    "SRPrimaryCareMedication",
)


def test_the_fixture_is_windows_1252_with_every_field_quoted():
    raw = (FOLDER / "SRPatient.csv").read_bytes()
    assert "Zoë".encode("cp1252") in raw and "Zoë".encode() not in raw
    assert all(line.startswith(b'"') and line.endswith(b'"') for line in raw.split(b"\r\n") if line)


def test_an_sre_extract_is_read_whole_with_its_histories_and_both_code_columns(engine):
    summary = load_folder(engine, FOLDER, "tpp_sre.yaml", WHEN)
    rows = sum(data_rows(FOLDER, f"{t}.csv", encoding="cp1252") for t in TABLES)
    skipped = sum(summary.not_used.values())
    assert summary.read + skipped == rows
    assert summary.read == summary.loaded + summary.quarantined
    for kind, counts in summary.by_kind.items():
        assert counts.read == counts.stored + counts.quarantined, kind
    assert dict(summary.not_used) == {
        "Patient row a SystmOne test patient": 1,
        "Patient row removed in SystmOne": 1,
        "Event row removed in SystmOne": 1,
        "Registration of an earlier period (the latest was used)": 1,
        "Address that ended before the extract (an earlier address)": 1,
    }
    where = quarantined(engine)
    assert [(f, line) for f, line, _ in where] == [
        ("SRCode.csv", 3),  # 31 Feb
        ("SRCode.csv", 4),  # SNOMED CT id failing its check digit
        ("SRCode.csv", 5),  # no such patient
        ("SRPrimaryCareMedication.csv", 3),  # dm+d id failing its check digit
    ]
    assert all(col for _, _, col in where)
    cols = {(f, line): col for f, line, col in where}
    assert cols[("SRCode.csv", 3)] == "DateEvent"
    assert cols[("SRCode.csv", 4)] == "SNOMEDCode"
    assert cols[("SRCode.csv", 5)] == "IDPatient"
    assert cols[("SRPrimaryCareMedication.csv", 3)] == "IDMultiLexDMD"

    patients = stored_patients(engine)
    assert set(patients) == {"101", "102", "103"}
    zoe = patients["101"]
    assert zoe.given_name == "Zoë" and zoe.family_name == "O'Brien"  # read as Windows-1252
    assert zoe.date_of_birth == dt.date(1975, 4, 12)
    # The registration that began latest, and the address with no end date.
    assert zoe.registration_start == dt.date(2010, 3, 1) and zoe.registration_end is None
    assert zoe.postcode == "ZZ99 1AA" and zoe.address == "1\nCafé Row\nExampleton"
    assert patients["102"].date_of_death == dt.date(2024, 12, 24)
    # One SRCode row with a CTV3 and a SNOMED CT code is two coded entries.
    assert stored_events(engine) == [
        ("101", "ctv3", "A531.", dt.date(2024, 10, 1)),
        ("101", "snomedct", "128200000", dt.date(2024, 10, 1)),
        ("103", "ctv3", "8H69.", dt.date(2025, 1, 15)),
    ]
    assert stored_issues(engine) == [("101", "dmd", "10290811000001105", dt.date(2025, 5, 1))]


def test_a_population_searches_the_same_from_the_sre_as_from_fhir(tmp_path):
    compared = equivalent_to_fhir(
        tmp_path, "sre", "tpp_sre.yaml", lambda i, _pid: str(pseudonym(i)), ("readv2",)
    )
    compared.assert_same()


def test_sre_quantities_written_with_their_unit_are_read_as_numbers(engine):
    load_folder(engine, FOLDER, "tpp_sre.yaml", WHEN)
    with engine.connect() as conn:
        quantities = conn.execute(text("SELECT quantity FROM medication_issue")).scalars().all()
    assert quantities == [56.0]  # "56 capsule"
