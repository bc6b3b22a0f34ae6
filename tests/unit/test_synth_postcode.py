"""Postcodes: well formed by the BS 7666 pattern, for every area in the data file."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthetic_ehr.people import name_data
from synthetic_ehr.postcode import is_valid_postcode, make_postcode, normalise_postcode

AREAS = [a for a, _ in name_data().areas]


@pytest.mark.parametrize("good", ["LS1 1AA", "SW1A 1AA", "W1A 0AX", "EC1A 1BB", "DN55 1PT", "ls11aa"])
def test_accepts(good: str) -> None:
    assert is_valid_postcode(normalise_postcode(good))


@pytest.mark.parametrize("bad", ["XX1 1XX", "QA1 1AA", "LS1 1AAA", "LS1 1CA", ""])
def test_rejects(bad: str) -> None:
    assert not is_valid_postcode(bad)


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(AREAS), st.integers(1, 29))
def test_generated_postcodes_valid(seed: int, area: str, district: int) -> None:
    pc = make_postcode(random.Random(seed), area, district)
    assert is_valid_postcode(pc)
    assert normalise_postcode(pc) == pc
