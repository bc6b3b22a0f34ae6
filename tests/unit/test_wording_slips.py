"""Wording practice staff read: abbreviations stay in capitals, GPs' reasons in the sheet's words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recruit.audit.figures import review_reason_label, words

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("gp_said_do_not_invite", "GP said do not invite"),
        ("nhs_number_invalid", "NHS number invalid"),
        ("fhir_invalid", "FHIR invalid"),
        ("duplicate_id", "Duplicate ID"),
        ("no_valid_address", "No valid address"),
        ("", ""),
    ],
)
def test_stored_codes_in_words_keep_abbreviations(code, said):
    assert words(code) == said


def test_review_reasons_use_the_sheets_words():
    assert review_reason_label("in_work_or_retired") == "Known to be in work or retired"
    assert review_reason_label("gp_something_new") == "GP something new"


def test_no_gp_or_nhs_in_lower_case_where_people_read_it():
    slips = re.compile(r"\b(Gp|Nhs|Ods|Fhir)\b")
    found = []
    for folder, pattern in (("letter_templates", "*"), ("recruit", "*.py"), ("recruit", "*.j2")):
        for path in (ROOT / folder).rglob(pattern):
            if path.is_file() and path.suffix in {".py", ".j2", ".md", ".css", ".html"}:
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if slips.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
