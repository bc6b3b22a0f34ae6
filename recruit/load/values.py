"""Checks and repairs for the values the engine relies on: NHS numbers, dates, codes.

Each check returns the clean value or raises Invalid with a sentence a person can act on. A value
that was fixed rather than rejected (a dateTime with no time zone) is reported through `repaired`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from recruit.nhs_numbers import digits_of
from recruit.nhs_numbers import is_valid as nhs_number_is_valid

if TYPE_CHECKING:
    from recruit.load.rows import HoldRow

LONDON = ZoneInfo("Europe/London")


class Invalid(ValueError):
    """A value that cannot be used; `code` groups the reasons in summaries."""

    def __init__(self, code: str, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field
        # What the broken record still signals (death, leaving, a coded entry), when its reader
        # could tell: the person is held back from letters (recruit.load.rows.HoldRow).
        self.holds: list[HoldRow] | None = None


def clean_nhs_number(raw: object, field: str) -> str:
    if not isinstance(raw, str | int):
        raise Invalid("nhs_number_invalid", "the NHS number is not text", field)
    value = digits_of(str(raw))
    if not nhs_number_is_valid(value):
        raise Invalid(
            "nhs_number_invalid",
            "the NHS number fails its check digit (Modulus 11) or is not 10 digits",
            field,
        )
    return value


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$"
)


class DateReader:
    """Parses FHIR date and dateTime values to a calendar date in England, as ISO text.

    ISO text (YYYY-MM-DD) rather than date objects: it is what SQLite stores, PostgreSQL casts
    it, it compares in date order, and most values arrive in that form already (the fast path).

    A dateTime with a time zone is moved to Europe/London before the date is taken (23:30 UTC
    on 30 June is 1 July in England). One without a time zone is read as London time and
    counted as repaired. Partial dates (a year, or year and month) take the first day; read_range
    gives both ends (birth dates).
    """

    def __init__(self, latest: dt.date) -> None:
        self.latest = latest
        self.latest_iso = latest.isoformat()
        self.repaired = 0

    def read(self, raw: object, field: str, *, required: bool = True) -> str | None:
        if raw is None or raw == "":
            if required:
                raise Invalid("date_missing", "the date is missing", field)
            return None
        if not isinstance(raw, str):
            raise Invalid("wrong_type", f"'{field}' should be a date written as text", field)
        if len(raw) == 10 and raw[4] == "-" and raw[7] == "-":
            try:
                value = dt.date.fromisoformat(raw).isoformat()
            except ValueError:
                value = self._parse(raw, field).isoformat()
        else:
            value = self._parse(raw.strip(), field).isoformat()
        if value > self.latest_iso:
            raise Invalid(
                "date_in_future",
                f"the date is after the extract date ({self.latest_iso})",
                field,
            )
        if value < "1880":
            raise Invalid("date_invalid", "the date is before 1880, which cannot be right", field)
        return value

    def read_range(self, raw: object, field: str) -> tuple[str, str | None]:
        """The first and last day a date can be: a year (2008) or a month (2008-11) is a range,
        so an age bound can be decided the safe way. The last is None when the date is exact,
        and never later than the extract date (the thing had happened by then)."""
        first = self.read(raw, field)
        assert first is not None and isinstance(raw, str)
        m = _DATE.match(raw.strip())
        if not m or m.group(3):
            return first, None
        year, month = int(m.group(1)), m.group(2)
        if month:
            nxt = dt.date(year + (month == "12"), int(month) % 12 + 1, 1)
            last = (nxt - dt.timedelta(days=1)).isoformat()
        else:
            last = f"{year:04d}-12-31"
        return first, min(last, self.latest_iso)

    def _parse(self, raw: str, field: str) -> dt.date:
        m = _DATE.match(raw)
        try:
            if m:
                year, month, day = m.group(1), m.group(2) or "1", m.group(3) or "1"
                return dt.date(int(year), int(month), int(day))
            m = _DATETIME.match(raw)
            if m:
                y, mo, d, h, mi, s, tz = m.groups()
                naive = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0))
                if tz is None:
                    self.repaired += 1
                    return naive.date()
                offset = dt.timedelta(0) if tz == "Z" else _offset(tz)
                aware = naive.replace(tzinfo=dt.timezone(offset))
                return aware.astimezone(LONDON).date()
        except ValueError:
            pass
        raise Invalid(
            "date_invalid", "the value is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)", field
        )


def _offset(tz: str) -> dt.timedelta:
    sign = -1 if tz[0] == "-" else 1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    return sign * dt.timedelta(hours=hours, minutes=minutes)


_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")


def clean_postcode(raw: object) -> str | None:
    """UK postcodes in their standard spaced form; anything else is kept as written (trimmed)."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip().upper()
    m = _POSTCODE.match(text)
    return f"{m.group(1)} {m.group(2)}" if m else text  # too long for a postcode: quarantined
