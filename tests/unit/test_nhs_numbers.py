"""NHS numbers: one check (the nhs-number package), shown 3-3-4 to people, stored as digits."""

from __future__ import annotations

import pytest

from recruit import nhs_numbers
from recruit.load.values import Invalid, clean_nhs_number, nhs_number_is_valid
from synthetic_ehr import nhs_number as synthetic
from tests.integration.load.fhir_samples import NHS_NUMBERS


@pytest.mark.parametrize("number", NHS_NUMBERS)
def test_synthetic_test_numbers_pass(number: str) -> None:
    assert nhs_numbers.is_valid(number)
    assert nhs_number_is_valid(number)  # the loader's name for the same check
    assert synthetic.is_valid(number)


@pytest.mark.parametrize(
    "value",
    [
        "9990000019",  # wrong check digit
        "999000001",  # nine digits
        "99900000180",  # eleven
        "999 000 0018",  # stored numbers never hold spaces: callers strip them first
        " 9990000018",
        "99900000a8",
        "١٢٣٤٥٦٧٨٩٠",  # digits, but not ASCII
        "",
    ],
)
def test_not_valid(value: str) -> None:
    assert not nhs_numbers.is_valid(value)


def test_check_digit_of_ten_is_never_valid() -> None:
    # 999 000 000? has check digit 10 under Modulus 11: no valid number has that stem.
    assert synthetic.check_digit("999000000") is None
    assert not any(nhs_numbers.is_valid(f"999000000{d}") for d in range(10))


def test_loader_strips_what_people_type() -> None:
    assert clean_nhs_number("999 000-0018", "identifier") == "9990000018"
    with pytest.raises(Invalid):
        clean_nhs_number("999 000 0019", "identifier")


def test_shown_three_three_four() -> None:
    assert nhs_numbers.for_people("9990000018") == "999 000 0018"
    assert nhs_numbers.for_people("999-000-0018") == "999 000 0018"
    assert nhs_numbers.for_people("12345") == "12345"  # not a number to lay out: shown as it is
    assert nhs_numbers.for_people(None) == ""
