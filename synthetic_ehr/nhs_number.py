"""Synthetic NHS numbers that cannot collide with real, issued ones.

NHS England reserves 999 000 0000 - 999 999 9999 for testing: those numbers pass the
Modulus 11 check but will never be issued (see the README for sources). Ten-digit numbers in
that block have 10**6 possible nine-digit stems, of which ~909,091 have a valid check digit,
so a run of up to `RESERVED_CAPACITY` patients gets unique numbers from the reserved block.

Larger runs overflow into the 998, 997, ... 990 prefixes. Those are outside every range issued
for England, Wales or the Isle of Man (3xx, 400-499 and 600-799 million) but are not formally
reserved, so `generate` reports when it has used them.

Numbers are assigned from a global patient index through a fixed permutation, so they are
unique within a run, do not look sequential, and do not depend on chunking.
"""

from __future__ import annotations

from array import array

import nhs_number

_STEMS_PER_BLOCK = 1_000_000
_PERM_MULT = 79_193  # coprime with 10**6: spreads consecutive indices across the block
_PERM_ADD = 123_457


def check_digit(stem: str) -> int | None:
    """Modulus 11 check digit for a nine-digit stem, or None if the stem cannot be valid
    (the `nhs-number` package's calculation; a result of 10 means no valid number)."""
    check = nhs_number.calculate_checksum(stem)
    return None if check is None or check == 10 else check


def is_valid(number: str) -> bool:
    """True for ten digits (3-3-4 spaces allowed) whose last digit is the Modulus 11 check digit."""
    s = number.replace(" ", "")
    return len(s) == 10 and s.isascii() and s.isdigit() and nhs_number.is_valid(s)


def in_reserved_test_range(number: str) -> bool:
    """True for 999 000 0000 - 999 999 9999, the block NHS England never issues."""
    s = number.replace(" ", "")
    return len(s) == 10 and s.startswith("999")


_BLOCKS: dict[int, tuple[array, list[int]]] = {}


def _block_upto(prefix: int, needed: int) -> array:
    """Valid numbers with a three-digit prefix in a fixed pseudo-random order, grown lazily.

    Returns at least `needed` entries unless the block is exhausted (~909,091 per prefix).
    The check digit is worked out inline (integer arithmetic) because this loop runs up to a
    million times; tests compare every number it makes with `is_valid` (the package's check).
    """
    out, cursor = _BLOCKS.setdefault(prefix, (array("q"), [0]))
    base = prefix * _STEMS_PER_BLOCK
    i = cursor[0]
    while len(out) < needed and i < _STEMS_PER_BLOCK:
        stem = base + (i * _PERM_MULT + _PERM_ADD) % _STEMS_PER_BLOCK
        i += 1
        total = 0
        rest = stem
        for w in (2, 3, 4, 5, 6, 7, 8, 9, 10):
            total += (rest % 10) * w
            rest //= 10
        check = 11 - total % 11
        if check == 10:
            continue
        out.append(stem * 10 + (0 if check == 11 else check))
    cursor[0] = i
    return out


RESERVED_CAPACITY = 909_091  # valid numbers in the 999 block; asserted in tests


def nhs_number_for_index(index: int) -> str:
    """The synthetic NHS number for a run's global patient index (0-based)."""
    if index < 0:
        raise ValueError("index must be >= 0")
    prefix = 999
    while prefix >= 990:
        block = _block_upto(prefix, index + 1)
        if index < len(block):
            return f"{block[index]:010d}"
        index -= len(block)
        prefix -= 1
    raise ValueError("more patients than synthetic NHS numbers available")


def prepare(count: int) -> None:
    """Precompute numbers for indices < count (call before forking workers)."""
    if count > 0:
        nhs_number_for_index(count - 1)


def format_nhs_number(number: str) -> str:
    """'999 123 4567' (3-3-4), as printed on letters and reports."""
    return f"{number[:3]} {number[3:6]} {number[6:]}"
