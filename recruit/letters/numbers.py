"""Study numbers: the only thing on a reply slip that links it back to a person.

A study number is random (40 bits from the operating system's secure generator), so it says
nothing about the person (not derived from an NHS number, date of birth or position in a list)
and cannot be guessed from another one. It uses Crockford's base-32 letters (no I, L, O or U, so
no letter looks like a digit) and ends in a check character (Damm's method over the 32 letters),
so a number copied wrongly from a slip, one character changed or two neighbours swapped (the
check character included), is caught. Luhn mod 32 was used first; it misses a swap of 0 and Z.
Example: INSTEP-7KQ3-M9XPA.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from recruit.errors import RecruitError

if TYPE_CHECKING:
    from sqlalchemy import Engine

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BODY = 8


def _times_x(value: int) -> int:
    """Multiply by x in GF(32), modulo x^5 + x^2 + 1 (a primitive polynomial)."""
    value <<= 1
    return value ^ 0b100101 if value & 0b100000 else value


def _interim(code: str) -> int:
    """Damm's algorithm with the quasigroup a*b = x.a + b over GF(32): totally anti-symmetric
    (x is neither 0 nor 1), so every single change and every neighbour swap moves the result."""
    interim = 0
    for char in code:
        interim = _times_x(interim) ^ ALPHABET.index(char)
    return interim


def _check_character(body: str) -> str:
    """The character that brings the whole code's interim to zero."""
    return ALPHABET[_times_x(_interim(body))]


def new_study_number(prefix: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(_BODY))
    code = body + _check_character(body)
    return f"{prefix}-{code[:4]}-{code[4:]}" if prefix else f"{code[:4]}-{code[4:]}"


def normalise(number: str) -> str:
    """As a person might have typed it: case, spaces and the look-alike letters I, L, O forgiven."""
    text = re.sub(r"[\s]", "", number.upper())
    return text


def is_valid_study_number(number: str, prefix: str = "") -> bool:
    """Whether a number (as printed, or typed with any case and spacing) has a valid check character."""
    text = normalise(number)
    if prefix:
        if not text.startswith(prefix.upper() + "-"):
            return False
        text = text[len(prefix) + 1 :]
    code = text.replace("-", "").translate(str.maketrans("ILO", "110"))
    if len(code) != _BODY + 1 or any(c not in ALPHABET for c in code):
        return False
    return _interim(code) == 0


def study_numbers_for(
    engine: Engine, study_id: int, prefix: str, nhs_numbers: Sequence[str]
) -> dict[str, str]:
    """Each person's study number for the study: the one they were given before, or a new one.

    New numbers are inserted and committed on a connection of their own before any letter is
    printed, so a run stopped part-way (even by kill -9) and run again prints the same numbers,
    and nobody ever holds two numbers for one study. If another run gives a number to the same
    person at the same moment, the unique constraint refuses the second and the numbers are read
    again."""
    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError

    from recruit.models import utcnow
    from recruit.tables import INVITATION, STUDY_NUMBER

    wanted = list(dict.fromkeys(nhs_numbers))
    for _attempt in range(10):
        found: dict[str, str] = {}
        with engine.connect() as conn:
            for chunk in _chunks(wanted):
                found.update(
                    conn.execute(
                        select(STUDY_NUMBER.c.nhs_number, STUDY_NUMBER.c.study_number).where(
                            STUDY_NUMBER.c.study_id == study_id, STUDY_NUMBER.c.nhs_number.in_(chunk)
                        )
                    ).all()
                )
        missing = [n for n in wanted if n not in found]
        if not missing:
            return found
        fresh: list[str] = []
        with engine.connect() as conn:
            while len(fresh) < len(missing):
                batch = {new_study_number(prefix) for _ in range(len(missing) - len(fresh))} - set(fresh)
                taken: set[str] = set()
                for table in (STUDY_NUMBER, INVITATION):
                    for chunk in _chunks(sorted(batch)):
                        taken |= set(
                            conn.execute(
                                select(table.c.study_number).where(table.c.study_number.in_(chunk))
                            ).scalars()
                        )
                fresh.extend(sorted(batch - taken))
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(STUDY_NUMBER),
                    [
                        {
                            "study_id": study_id,
                            "nhs_number": nhs,
                            "study_number": number,
                            "created_at": utcnow(),
                        }
                        for nhs, number in zip(missing, fresh, strict=True)
                    ],
                )
        except IntegrityError:
            continue  # another run numbered some of them first: read again
        found.update(zip(missing, fresh, strict=True))
        return found
    raise RecruitError(  # pragma: no cover
        "Study numbers could not be given: other letters runs kept numbering the same people. Try again."
    )


def _chunks(items: Sequence[str], size: int = 5000) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
