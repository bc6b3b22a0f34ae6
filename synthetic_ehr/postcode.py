"""Well-formed UK postcodes (BS 7666 shape) for synthetic addresses.

The outward code uses a real English postcode area (data/postcode_areas.csv) and a district
number; the inward code is a digit plus two letters from the set the standard allows. The result
is well formed but not checked against Royal Mail data, so it may or may not exist.
"""

from __future__ import annotations

import random
import re

# The BS 7666 pattern quoted in ../shared/reference/letters-and-review.md s6.2.
POSTCODE_RE = re.compile(
    r"^(GIR ?0AA|(?:[A-PR-UWYZ][0-9][0-9A-HJKPSTUW]?|[A-PR-UWYZ][A-HK-Y][0-9][0-9ABEHMNPRVWXY]?)"
    r" ?[0-9][ABD-HJLNP-UW-Z]{2})$"
)
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def is_valid_postcode(value: str) -> bool:
    """True if `value` (any case, optional single space) matches the BS 7666 pattern."""
    return bool(POSTCODE_RE.match(value.strip().upper()))


def normalise_postcode(value: str) -> str:
    """Upper case with one space before the inward code: 'ls11aa' -> 'LS1 1AA'."""
    s = "".join(value.split()).upper()
    return f"{s[:-3]} {s[-3:]}" if len(s) > 3 else s


def make_postcode(rng: random.Random, area: str, district: int) -> str:
    """A postcode in `area` district `district`, e.g. ('LS', 6) -> 'LS6 2QN'."""
    inward = f"{rng.randrange(10)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"
    return f"{area}{district} {inward}"
