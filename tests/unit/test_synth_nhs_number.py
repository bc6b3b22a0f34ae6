"""Synthetic NHS numbers: Modulus 11, the reserved test range, uniqueness, overflow."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_ehr import nhs_number as nn


def test_known_numbers() -> None:
    # Examples from ../shared/reference/letters-and-review.md s6.1.
    assert nn.is_valid("9434765919")
    assert nn.is_valid("943 476 5919")
    assert not nn.is_valid("9434765918")
    assert not nn.is_valid("94347659")
    assert not nn.is_valid("abcdefghij")


def test_check_digit_10_is_invalid() -> None:
    # Find a stem whose check digit would be 10: no valid number exists for it.
    stem = next(f"{i:09d}" for i in range(999_000_000, 999_000_200) if nn.check_digit(f"{i:09d}") is None)
    assert all(not nn.is_valid(stem + str(d)) for d in range(10))


@settings(deadline=None)  # the first call builds the number table
@given(st.integers(min_value=0, max_value=nn.RESERVED_CAPACITY - 1))
def test_numbers_valid_and_reserved(index: int) -> None:
    number = nn.nhs_number_for_index(index)
    assert nn.is_valid(number)
    assert nn.in_reserved_test_range(number)


def test_unique_and_not_sequential() -> None:
    numbers = [nn.nhs_number_for_index(i) for i in range(50_000)]
    assert len(set(numbers)) == len(numbers)
    assert numbers[1] != str(int(numbers[0]) + 1)


def test_reserved_capacity_and_overflow() -> None:
    last = nn.nhs_number_for_index(nn.RESERVED_CAPACITY - 1)
    assert nn.in_reserved_test_range(last)
    assert len(nn._block_upto(999, nn.RESERVED_CAPACITY + 10)) == nn.RESERVED_CAPACITY
    over = nn.nhs_number_for_index(nn.RESERVED_CAPACITY)
    assert nn.is_valid(over)
    assert over.startswith("998")  # outside every issued range (3xx, 4xx, 6xx-7xx)


@given(st.integers(min_value=0, max_value=10**9))
def test_format(n: int) -> None:
    s = f"{n:010d}"
    assert nn.format_nhs_number(s).replace(" ", "") == s
