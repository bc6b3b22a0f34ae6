"""Date arithmetic done in Python on the index date, so the SQL only compares dates.

Comparing a date column with a bound date is the one date operation every engine we target
(SQLite, PostgreSQL, DuckDB) does the same way; the reference evaluator uses these same helpers.
"""

from __future__ import annotations

import calendar
import datetime as dt

from recruit.query.model import Window


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day of the month `months` earlier, clamped to the month's end (31 Mar - 1 = 28/29 Feb)."""
    total = day.year * 12 + day.month - 1 - months
    year, month0 = divmod(total, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(day.day, last))


def years_before(day: dt.date, years: int) -> dt.date:
    return months_before(day, 12 * years)


def age_on(date_of_birth: dt.date, day: dt.date) -> int:
    """Whole years; someone born on 29 February turns a year older on 1 March in other years."""
    return day.year - date_of_birth.year - ((day.month, day.day) < (date_of_birth.month, date_of_birth.day))


def window_bounds(window: Window, index_date: dt.date) -> tuple[dt.date | None, dt.date]:
    """Inclusive (start, end); start None means no lower bound. Never ends after the index date."""
    if window.last_months is not None:
        return months_before(index_date, window.last_months), index_date
    if window.last_days is not None:
        return index_date - dt.timedelta(days=window.last_days), index_date
    if window.start is not None:
        end = min(window.end or index_date, index_date)
        return window.start, end
    return None, index_date
