"""SNOMED CT and dm+d ids are checked (Verhoeff digit, partition) when a table declares them:
a local code id that looks like one is refused rather than stored under the wrong meaning."""

from __future__ import annotations

import csv

import pytest

from recruit.load.csv_extract import person_name, place_code, valid_sctid
from recruit.resources import rules_file


@pytest.mark.parametrize(
    "code",
    ["22298006", "1082551000000105", "322236009", "39695211000001102", "1047321000000104"],
)
def test_real_concept_ids_pass(code):
    assert valid_sctid(code)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("22298007", "check digit"),
        ("1082551000000100", "check digit (a rounded number)"),
        ("022298006", "leading zero"),
        ("12345", "too short"),
        ("2229801", "description partition (01) is not a concept"),
        ("ABC123", "not digits"),
    ],
)
def test_ids_that_cannot_be_concepts_fail(code, why):
    assert not valid_sctid(code), why


def test_read_and_ctv3_codes_keep_their_own_form():
    assert place_code("readv2", "N245.00") == "N245."
    assert place_code("ctv3", "XE0Ua") == "XE0Ua"
    assert place_code("snomedct", "22298007") is None


def test_every_shipped_snomed_and_dmd_code_passes_the_check():
    """A codelist id that fails the check could never match a tabular extract's code."""
    folder = rules_file("codelists/codelists.yaml").parent
    bad = []
    for path in sorted(folder.glob("*.csv")):
        for row in csv.DictReader(path.open(encoding="utf-8")):
            if row.get("system") in ("snomedct", "dmd") and not valid_sctid(row["code"]):
                bad.append((path.name, row["code"]))
    assert bad == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr A Smith", ("Dr", "A", "Smith")),
        ("SMITH, Anne (Dr)", ("Dr", "Anne", "Smith")),
        ("Smith, Anne", (None, "Anne", "Smith")),
        ("Anne Smith", (None, "Anne", "Smith")),
        ("O'BRIEN-JONES, Mary Ann (Dr)", ("Dr", "Mary Ann", "O'Brien-Jones")),
    ],
)
def test_usual_gp_names_as_systems_print_them(text, expected):
    assert person_name(text) == expected
