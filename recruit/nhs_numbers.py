"""NHS numbers: the one place the check digit is tested and the one way they are shown to people.

The Modulus 11 check comes from the `nhs-number` package (NHS Data Dictionary algorithm, also
rejecting numbers in the Scottish CHI range whose first six digits are not a date), so recruit
does not keep its own copy. Numbers are stored as ten plain digits; people read them as 3-3-4
(``999 000 0018``), the layout the NHS Number standard asks for on screens and paper.
"""

from __future__ import annotations

import re

import nhs_number

__all__ = ["digits_of", "for_people", "is_valid"]

_TEN_DIGITS = re.compile(r"[0-9]{10}")


def is_valid(value: str) -> bool:
    """True for exactly ten ASCII digits with a correct check digit (no spaces: callers strip
    them first, so a stored number is always the plain ten digits)."""
    return bool(_TEN_DIGITS.fullmatch(value)) and nhs_number.is_valid(value)


def digits_of(text: str | None) -> str:
    """The number with the spaces and dashes people type taken out ('999 000-0018' -> '9990000018')."""
    return re.sub(r"[\s-]", "", text or "")


def for_people(number: str | None) -> str:
    """'9990000018' -> '999 000 0018'. Anything that is not ten digits is shown as it is."""
    digits = digits_of(number)
    if not _TEN_DIGITS.fullmatch(digits):
        return number or ""
    return f"{digits[:3]} {digits[3:6]} {digits[6:]}"
